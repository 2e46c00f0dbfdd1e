"""One run on a lent GPU: the course's table on the evaluation split, then target answers for draft training.

    python benchmarks/gpu_run.py --gguf model.gguf --carried .gpu --out OUT --seconds 420

How it was carried and run: see benchmarks/README.md ("The GPU recording"). Sections, each saved as soon as it ends (a
run cut short still returns what it finished):

1. the target converted from the GGUF file exactly as on a CPU (``models._convert_gguf``), its weights checked against
   sums carried from the CPU's conversion; the course's draft and feature head from the package;
2. greedy decoding on static caches (``perf.graphs.StaticDecoder``) on every evaluation prompt: target-only without and
   with CUDA graphs, speculative with the draft model at several τ with graphs, all prompt by prompt in turns;
   transformers' ``generate`` on the same prompts; identical output checked against graphed target-only;
3. the course's eager loop (``perf.benchmark.drafter_benchmark``) on the first prompts: draft model, prompt lookup,
   feature head, transformers' prompt lookup and assisted generation; token trees (``tree.tree_generate``);
4. until the time is spent: requests written by the target (self-instruct) and its greedy answers, as token ids
   (``answers.save_answers``), for the drafts' next training run on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

START = time.perf_counter()
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a dry run of the same code, small


def elapsed() -> float:
    return time.perf_counter() - START


def log(*args):
    print(f"[{elapsed():6.1f} s]", *args, flush=True)


class Report:
    def __init__(self, path: Path):
        self.path, self.data = path, {"sections": {}, "errors": {}}

    def save(self):
        self.path.write_text(json.dumps(self.data, indent=1, default=str))

    def section(self, name, function, *args, **kwargs):
        began = elapsed()
        log(f"--- {name}")
        try:
            self.data["sections"][name] = function(*args, **kwargs)
        except Exception as error:  # every section is tried; one that fails says why and the next goes on
            self.data["errors"][name] = traceback.format_exc()[-3000:]
            log(f"{name} FAILED: {type(error).__name__}: {error}")
        self.data.setdefault("seconds", {})[name] = round(elapsed() - began, 1)
        self.save()
        return self.data["sections"].get(name)


# ----------------------------------------------------------------------------------------------------- 1. models
def prepare_target(gguf: Path, carried: Path):
    """De-quantize the GGUF file to float32 as ``models._convert_gguf`` does on a CPU, with the tokenizer files the
    CPU's conversion wrote (carried), then load it the course's way and check every weight against the CPU's sums."""
    import shutil

    from transformers import AutoModelForCausalLM

    from specdec_course import models
    from specdec_course.models import default_target_cache, write_manifest

    destination = default_target_cache()
    shutil.rmtree(destination, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(destination)
    del model
    for name in json.loads((carried / "target_files.json").read_text())["copy"]:
        shutil.copyfile(carried / "target" / name, destination / name)
    write_manifest(destination, source=str(gguf))
    target, tokenizer = models.load_target(device=DEVICE, kernels="stock")
    expected = json.loads((carried / "weight_sums.json").read_text())
    worst = 0.0
    for name, tensor in target.state_dict().items():
        if name in expected:
            got = tensor.double().cpu().sum().item(), tensor.double().cpu().abs().sum().item()
            want = expected[name]
            worst = max(worst, abs(got[0] - want[0]) / max(1.0, abs(want[1])), abs(got[1] - want[1]) / max(1.0, want[1]))
    checked = sum(name in expected for name in target.state_dict())
    if checked != len(expected) or worst > 1e-9:
        raise RuntimeError(f"the converted target differs from the CPU's: {checked}/{len(expected)} tensors found, "
                           f"largest relative difference of sums {worst:.2e}")
    return target, tokenizer, {"weights_checked": checked,
                               "largest_relative_sum_difference": worst}


def machine() -> dict:
    import transformers

    if DEVICE.type != "cuda":
        return {"device": "cpu (dry run)", "torch": torch.__version__, "transformers": transformers.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1),
            "multiprocessors": props.multi_processor_count, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "cpu_cores": os.cpu_count(),
            "cuda": torch.version.cuda, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ----------------------------------------------------------------------------------------------------- 2. graphs
# ----------------------------------------------------------------------------------------------------- 3. eager loop
def eager_drafters(target, draft, tokenizer, prompts, *, max_new_tokens, taus):
    from specdec_course.drafters import ModelDrafter, PromptLookup, load_feature_head
    from specdec_course.perf.benchmark import drafter_benchmark

    drafters = {"draft model": ModelDrafter(draft), "prompt lookup": PromptLookup.for_model(target),
                "feature head": load_feature_head(target)}
    report = drafter_benchmark(target, tokenizer, drafters, taus=taus, max_new_tokens=max_new_tokens, prompts=prompts,
                               draft=draft, cost_repeats=3, progress=True)
    return report


def trees(target, draft, tokenizer, prompts, *, max_new_tokens, budgets):
    from specdec_course.generation import sync
    from specdec_course.models import chat_prompt
    from specdec_course.perf.trees import run_configuration
    from specdec_course.tree import tree_generate

    eos = tokenizer.eos_token_id
    ids = [chat_prompt(tokenizer, p).to(DEVICE) for p in prompts]
    tree_generate(target, draft, ids[0], 8, budget=budgets[0], eos_token_id=eos)  # warm-up
    configs = [("target only (course loop)", None)] + [("chain, draft model", 3)]
    configs += [("tree, draft model (dynamic)", b) for b in budgets] + [("tree, draft model (static 4-2-1-1)", "static")]
    kinds = {"target only (course loop)": "target", "chain, draft model": "chain", "tree, draft model (dynamic)": "tree",
             "tree, draft model (static 4-2-1-1)": "static"}
    totals = {c: {"seconds": 0.0, "tokens": 0, "passes": 0, "identical": []} for c in configs}
    for x in ids:
        reference = None
        for name, setting in configs:
            sync(DEVICE)
            began = time.perf_counter()
            tokens, passes = run_configuration(target, draft, x, max_new_tokens, eos, kinds[name],
                                               (4, 2, 1, 1) if setting == "static" else setting)
            sync(DEVICE)
            row = totals[(name, setting)]
            row["seconds"] += time.perf_counter() - began
            row["tokens"] += len(tokens)
            row["passes"] += passes
            reference = tokens if reference is None else reference
            row["identical"].append(tokens == reference)
    base = totals[configs[0]]
    rows = [{"config": name, "setting": setting, "tokens_per_s": r["tokens"] / r["seconds"],
             "ratio": (r["tokens"] / r["seconds"]) / (base["tokens"] / base["seconds"]),
             "tokens_per_pass": r["tokens"] / max(r["passes"], 1), "identical": all(r["identical"])}
            for (name, setting), r in totals.items()]
    return {"prompts": len(ids), "max_new_tokens": max_new_tokens, "rows": rows}


# ----------------------------------------------------------------------------------------------------- 4. data
def answers_at_scale(target, tokenizer, out: Path, *, deadline: float, batch_size: int, chunk: int):
    from specdec_course.answers import answer_requests, load_answers
    from specdec_course.distill import load_prompts
    from specdec_course.self_instruct import write_requests

    requests_path = out / "requests_h200.json"
    answers_path = out / "answers_h200.npz"
    shipped = json.loads((ROOT / "specdec_course/data/self_instruct_requests.json").read_text())["requests"]
    exclude = [r["request"] for r in shipped]
    for split in ("eval", "heldout", "rewrite"):  # never train on what the course evaluates on
        exclude += load_prompts(split)
    requests: list[dict] = []
    made = {"requests": 0, "answers": 0, "answer_tokens": 0, "request_seconds": 0.0, "answer_seconds": 0.0}
    round_index = 0
    while elapsed() < deadline - 40:
        began = time.perf_counter()
        new = write_requests(target, tokenizer, chunk, batch_size=batch_size, seed=1000 + round_index,
                             exclude=exclude + [r["request"] for r in requests], progress=False)
        requests += new
        made["request_seconds"] += time.perf_counter() - began
        requests_path.write_text(json.dumps({"about": "user requests written by the target itself (self-instruct), "
                                                      "on a GPU", "temperature": 0.9, "seed": "1000 + round",
                                             "requests": requests}))
        round_index += 1
        log(f"{len(requests)} requests")
        if elapsed() > deadline - 30:
            break
        began = time.perf_counter()
        answers = answer_requests(target, tokenizer, len(new), path=answers_path, requests_file=requests_path,
                                  max_new_tokens=128, batch_size=batch_size, progress=False)
        made["answer_seconds"] += time.perf_counter() - began
        log(f"{len(answers['sequences'])} answers")
    answers = load_answers(answers_path)
    made["requests"] = len(requests)
    made["answers"] = len(answers["sequences"])
    made["answer_tokens"] = int(sum(len(s) - n for s, n in zip(answers["sequences"], answers["prompt_lengths"])))
    made["tokens"] = int(sum(len(s) for s in answers["sequences"]))
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--carried", type=Path, default=ROOT / ".gpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=420, help="stop starting new work after this many seconds")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=40, help="evaluation prompts for the graphed table")
    parser.add_argument("--eager-prompts", type=int, default=8, help="evaluation prompts for the eager rows")
    parser.add_argument("--batch-size", type=int, default=384, help="sequences per batch when writing answers")
    parser.add_argument("--taus", type=int, nargs="*", default=[1, 2, 3, 4, 6], help="τ of the graphed rows")
    parser.add_argument("--eager-tokens", type=int, default=64, help="new tokens per prompt in the eager rows")
    parser.add_argument("--skip", nargs="*", default=[], help="sections to leave out: graphs eager trees answers")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "bench_h200.json")
    report.data["command"] = " ".join(sys.argv)
    report.data["machine"] = machine()
    log(report.data["machine"])
    loaded = report.section("load", prepare_target, args.gguf, args.carried)
    target, tokenizer, check = loaded if loaded else (None, None, None)
    if target is None:
        return 1
    report.data["sections"]["load"] = check
    from specdec_course.distill import load_prompts
    from specdec_course.models import load_draft

    draft = load_draft(device=DEVICE, kernels="stock", target=target)
    prompts = load_prompts("eval")[: args.prompts]
    if "graphs" not in args.skip:
        from specdec_course.perf.graphs import graphed_benchmark

        report.section("graphs", graphed_benchmark, target, draft, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                       taus=tuple(args.taus), eager_prompts=args.eager_prompts)
    if "eager" not in args.skip and elapsed() < args.seconds - 120:
        report.section("eager", eager_drafters, target, draft, tokenizer, prompts[: args.eager_prompts],
                       max_new_tokens=args.eager_tokens, taus=(2, 4))
    if "trees" not in args.skip and elapsed() < args.seconds - 90:
        report.section("trees", trees, target, draft, tokenizer, prompts[: args.eager_prompts], max_new_tokens=args.eager_tokens,
                       budgets=(4, 8, 16))
    if "answers" not in args.skip and elapsed() < args.seconds - 60:
        report.section("answers", answers_at_scale, target, tokenizer, args.out, deadline=args.seconds,
                       batch_size=args.batch_size, chunk=2 * args.batch_size)
    report.data["total_seconds"] = round(elapsed(), 1)
    report.save()
    log("done", json.dumps(report.data["errors"])[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
