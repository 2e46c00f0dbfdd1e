"""Command line: ``python -m specdec_course COMMAND``.

    demo        load the real target model and generate an answer in the terminal
    acceptance  measure the draft's greedy acceptance rate alpha and cost ratio c
    bench       target-only, speculative (each tau, adaptive policies) and transformers' assisted generation side by
                side, predicted speedup beside measured, for each kernel path
    exercises   regenerate exercises/ from solutions/ (--check: only compare)
    nbgrader    an nbgrader course folder made from solutions/ (for classes that grade with nbgrader)
    grade       run learners' exercise notebooks (a folder of them) against the checks; CSV of points per task
    gradebook   a graded class's records: rubric scores merged, one row per learner, feedback files
    doctor      check the set-up (Python, pinned packages, model, cache, device, kernel path, Jupyter kernel)
    check       run your own exercise notebooks and list which checks pass, across exercises
    release     write the learners' copy of the course (no solutions, reference answers or hidden checks)
"""
from __future__ import annotations

import argparse
import sys


def cmd_demo(args) -> int:
    from . import autoregressive_generate, chat_prompt, describe_machine, load_target

    model, tokenizer = load_target(args.model, device=args.device)
    print(f"machine: {describe_machine(model.device)}")
    ids = chat_prompt(tokenizer, args.prompt)
    print(f"\nprompt: {args.prompt}\n")
    result = autoregressive_generate(model, ids, args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                                     eos_token_id=tokenizer.eos_token_id)
    print(result.text)
    print(f"\n{len(result)} tokens at {result.tokens_per_second:.1f} tokens/s "
          f"({1000 * result.total_time / max(len(result), 1):.0f} ms per token, target only)")
    return 0


def _read_prompts(path) -> list[str]:
    import json
    from pathlib import Path

    try:
        prompts = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"prompts file {path} does not exist") from None
    except ValueError as err:
        raise ValueError(f"prompts file {path} is not valid JSON ({err}); give a JSON list of strings") from None
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError(f"prompts file {path} must hold a non-empty JSON list of non-empty strings")
    return prompts


def _write_json(path, report: dict) -> None:
    import json

    with open(path, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {path}")


def cmd_acceptance(args) -> int:
    from .perf.analysis import acceptance_report, format_report
    from .distill import load_prompts
    from .models import describe_machine, load_pair

    prompts = _read_prompts(args.prompts) if args.prompts else load_prompts(args.split)
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    target, draft, tokenizer = load_pair(args.target, args.draft, device=args.device)
    machine = describe_machine(target.device)
    print(f"machine: {machine}")
    report = acceptance_report(target, draft, tokenizer, prompts, args.max_new_tokens)
    print(format_report(report))
    if args.json:
        report["machine"] = machine
        report["max_new_tokens"] = args.max_new_tokens
        _write_json(args.json, report)
    return 0


def cmd_bench(args) -> int:
    from .perf.benchmark import bench_prompts, format_kernel_report, kernel_benchmark
    from .perf.kernels import KERNEL_CHOICES
    from .models import describe_machine, load_pair

    taus = args.taus or list(range(1, 9))
    if any(t < 1 for t in taus):
        raise ValueError(f"--taus must all be at least 1, got {taus}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    if args.drafters and args.trees:
        raise ValueError("--drafters and --trees are two different tables: give one of them")
    if args.tree_drafter == "lookup" and args.levels:
        raise ValueError("--levels grows a model's trees a level at a time; prompt lookup's trees are its matches")
    if args.levels is not None and args.levels < 1:
        raise ValueError(f"--levels is the number of draft passes per tree, at least 1; got {args.levels}")
    if any(b < 1 for b in args.budgets):
        raise ValueError(f"--budgets are node counts per tree, each at least 1; got {' '.join(map(str, args.budgets))}")
    bad = [k for k in args.kernels if k not in KERNEL_CHOICES]
    if bad:
        raise ValueError(f"--kernels {' '.join(bad)}: use any of {', '.join(KERNEL_CHOICES)}")
    bad = [k for k in args.kinds if k not in ("none", "dynamic", "static")]
    if bad:
        raise ValueError(f"--kinds {' '.join(bad)}: use any of none, dynamic, static")
    bad = [p for p in args.policies if p not in ("adaptive", "heuristic")]
    if bad:
        raise ValueError(f"--policies {' '.join(bad)}: use any of adaptive, heuristic (or none at all)")
    max_new = args.max_new_tokens or (48 if args.quick else 96)
    prompts = _read_prompts(args.prompts) if args.prompts else bench_prompts(quick=args.quick, split=args.split)
    target, draft, tokenizer = load_pair(device=args.device, dtype=args.dtype)
    machine = describe_machine(target.device)
    if args.drafters:
        return _bench_drafters(args, target, draft, tokenizer, prompts, max_new, machine)
    if args.trees:
        return _bench_trees(args, target, draft, tokenizer, prompts, max_new, machine)
    print(f"machine: {machine}")
    print(f"{len(prompts)} prompts x {max_new} new tokens, {target.dtype}, kernels {' '.join(args.kernels)}, tau in {taus}, "
          f"caches {' '.join(args.kinds)}")
    report = kernel_benchmark(target, draft, tokenizer, kernels=args.kernels, taus=taus, max_new_tokens=max_new,
                              prompts=prompts, kinds=args.kinds, policies=args.policies, assisted=not args.no_assisted,
                              cost_repeats=args.repeats, progress=not args.no_progress)
    report.update({"machine": machine, "dtype": str(target.dtype).replace("torch.", "")})

    def draw(plt):
        from .course.viz import plot_speedup

        fig, axes = plt.subplots(1, len(report["blocks"]), figsize=(6.5 * len(report["blocks"]), 3.8), squeeze=False)
        for ax, block in zip(axes[0], report["blocks"]):
            plot_speedup(block, ax, title=f"target {block['target_kernels']}, draft {block['draft_kernels']}")
        return fig

    return _publish(args, report, format_kernel_report, draw)


def _publish(args, report: dict, table, draw) -> int:
    """The end of every bench: the command that made the report, its ``table(report)``, the JSON and the figure
    (``draw(plt)`` returns it) when asked."""
    report["command"] = "python -m specdec_course " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
    print(table(report))
    if args.json:
        _write_json(args.json, report)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = draw(plt)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


def _bench_drafters(args, target, draft, tokenizer, prompts, max_new, machine) -> int:
    from .perf.benchmark import default_drafters, drafter_benchmark, format_drafter_table, pass_floors

    taus = args.taus or [2, 4, 6]
    drafters = default_drafters(target, draft)
    print(f"machine: {machine}")
    print(f"{len(prompts)} prompts x {max_new} new tokens, drafters: {', '.join(drafters)}; tau in {taus}")
    floor = pass_floors(target, drafters)
    report = drafter_benchmark(target, tokenizer, drafters, taus=taus, max_new_tokens=max_new, prompts=prompts,
                               draft=None if args.no_assisted else draft, cost_repeats=args.repeats,
                               progress=not args.no_progress)
    report.update({"machine": machine, "split": None if args.prompts else args.split, "floor": floor})

    def draw(plt):
        from .course.viz import plot_drafters

        fig, ax = plt.subplots(figsize=(7.5, 4.0))
        plot_drafters(report, ax, title=f"{report['split'] or 'given'} prompts, {max_new} tokens each")
        return fig

    return _publish(args, report, format_drafter_table, draw)


def _bench_trees(args, target, draft, tokenizer, prompts, max_new, machine) -> int:
    from .perf.trees import format_tree_table, tree_benchmark
    from .tree import DEFAULT_LEVELS

    taus = args.taus or [2, 3, 4]
    if args.tree_drafter == "lookup":
        from .drafters import PromptLookup

        draft = PromptLookup.for_model(target)
    elif args.tree_drafter == "quantized":
        from .drafters import quantized_copy

        draft = quantized_copy(target, "auto", verbose=True)
    elif args.tree_drafter == "head":
        from .drafters import load_feature_head

        draft = load_feature_head(target)
    print(f"machine: {machine}")
    print(f"trees and chains from: {getattr(draft, 'drafter_name', None) or getattr(draft, 'name', None) or 'the draft model'}")
    own_trees = args.tree_drafter in ("lookup", "head")  # trees of their own: no static shape
    budgets, levels = args.budgets, args.levels
    if args.tree_drafter == "head":  # the head grows its trees a level at a time, and only so
        budgets, levels = [], levels or DEFAULT_LEVELS
    level_trees = [(b, levels) for b in args.budgets] if levels else []
    print(f"{len(prompts)} prompts x {max_new} new tokens; chains tau in {taus}, dynamic trees of {args.budgets} nodes"
          + (" (one draft pass per node)" if budgets else "")
          + (f"{', and' if budgets else ''} a level at a time in {levels} passes" if levels else "")
          + ("" if own_trees else ", static 4-2-1-1"))
    report = tree_benchmark(target, draft, tokenizer, prompts, taus=taus, budgets=budgets,
                            shapes=() if own_trees else ((4, 2, 1, 1),),
                            level_trees=level_trees, max_new_tokens=max_new, repeats=args.repeats,
                            progress=not args.no_progress)
    report.update({"machine": machine, "tree_drafter": args.tree_drafter, "split": None if args.prompts else args.split})

    def draw(plt):
        from .course.viz import plot_tree_rows

        return plot_tree_rows(report, title=f"chains and trees, {len(prompts)} prompts × {max_new} tokens\n{machine}").figure

    return _publish(args, report, format_tree_table, draw)


def cmd_exercises(args) -> int:
    from .course.exercises import generate

    report = generate(check=args.check)
    if args.check and report:
        print("run `python -m specdec_course exercises` to regenerate them", file=sys.stderr)
        return 1
    return 0


def _instructors_only(command: str) -> None:
    """A clear refusal in the learners' copy of the course, which has no hidden checks to grade with."""
    import importlib.util

    if importlib.util.find_spec("specdec_course.course.hidden_checks") is None:
        raise ValueError(f"`{command}` is for instructors: it needs the hidden checks, which this learners' copy of the "
                         "course does not include. To see where you stand, run `python -m specdec_course check`")


def cmd_grade(args) -> int:
    from .course.gradebook import grade_class

    _instructors_only("grade")
    grade_class(args.submissions, exercise=args.exercise, timeout=args.timeout, out=args.out, trusted=args.trusted,
                memory_mb=args.memory_mb, max_processes=args.max_processes, manual=args.manual, roster=args.roster,
                by_learner=args.by_learner, feedback=args.feedback)
    return 0


def cmd_gradebook(args) -> int:
    from .course import gradebook
    from .course.grading import summary, write_rows

    if not (args.manual or args.by_learner or args.feedback):
        raise ValueError("gradebook needs something to do: --manual (with --out), --by-learner or --feedback")
    gradebook.check_inputs(manual=args.manual, roster=args.roster, feedback=args.feedback)
    rows = gradebook.read_grades(args.grades)
    gradebook.publish(rows, manual=args.manual, roster=args.roster, by_learner_path=args.by_learner,
                      feedback=args.feedback)
    if args.out:
        write_rows(rows, args.out)
    print(summary(rows))
    return 0


def _class_options(parser) -> None:
    """The options that turn grades into a class's records (grade and gradebook)."""
    parser.add_argument("--manual", default=None, help="CSV of rubric scores for written answers: columns learner, "
                        "exercise, task, points and optionally comment (task as \"Task 3\" or its full name)")
    parser.add_argument("--roster", default=None, help="CSV mapping learners to student ids: columns learner, "
                        "student_id and optionally name")
    parser.add_argument("--by-learner", default=None, help="also write this CSV: one row per learner (student id, each "
                        "task's points, total, max) for a learning platform")
    parser.add_argument("--feedback", default=None, help="also write one Markdown feedback file per learner into this "
                        "folder (a new or empty one, or one this command wrote before)")


def cmd_nbgrader(args) -> int:
    from .course.nbgrader_course import write_course

    _instructors_only("nbgrader")
    write_course(args.course, args.exercises or None)
    return 0


def cmd_doctor(args) -> int:
    from .course.doctor import main as doctor

    return doctor(model=not args.no_model)


def cmd_check(args) -> int:
    from .course.selfcheck import main as check

    return check(args.exercises, folder=args.folder, timeout=args.timeout)


def cmd_release(args) -> int:
    from .course.release import build

    build(args.folder)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specdec_course", description="specdec-course command line")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="generate text with the real target model in the terminal")
    demo.add_argument("--prompt", default="Explain in three sentences why the sky is blue.")
    demo.add_argument("--max-new-tokens", type=int, default=96)
    demo.add_argument("--temperature", type=float, default=0.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--model", default=None, help="a Hugging Face name or local folder (default: embedded SmolLM2-135M-Instruct)")
    demo.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    demo.set_defaults(run=cmd_demo)

    acc = sub.add_parser("acceptance", help="greedy acceptance rate alpha and cost ratio c of the draft/target pair")
    acc.add_argument("--prompts", default=None, help="a JSON file with a list of prompts (default: the --split)")
    acc.add_argument("--split", default="eval", choices=["eval", "heldout", "train"],
                     help="which split of the course's prompt set (default eval: written independently of all training data; "
                          "heldout: the older split written from the training prompts' templates)")
    acc.add_argument("--max-new-tokens", type=int, default=128)
    acc.add_argument("--json", default=None, help="also write the report to this JSON file")
    acc.add_argument("--target", default=None, help="target name or folder (default: embedded SmolLM2-135M-Instruct)")
    acc.add_argument("--draft", default=None, help="draft name or folder (default: the course's distilled draft)")
    acc.add_argument("--device", default=None)
    acc.set_defaults(run=cmd_acceptance)

    bench = sub.add_parser("bench", help="tokens/s of target-only vs speculative decoding, with and without KV caches")
    bench.add_argument("--quick", action="store_true",
                       help="the first 4 prompts of the split, 48 new tokens each (default: the first 8, 96 tokens)")
    bench.add_argument("--prompts", default=None, help="a JSON file with a list of prompts (default: the --split)")
    bench.add_argument("--split", default="eval", choices=["eval", "heldout", "train", "rewrite"],
                       help="which split of the course's prompt set (default eval: never trained on, written independently)")
    bench.add_argument("--taus", type=int, nargs="*", default=None)
    bench.add_argument("--max-new-tokens", type=int, default=None)
    bench.add_argument("--kernels", nargs="+", default=["stock", "auto"],
                       help="kernel paths to compare (auto = each model's measured choice; default: stock auto)")
    bench.add_argument("--kinds", nargs="+", default=["dynamic", "static"], help="cache kinds: none dynamic static")
    bench.add_argument("--policies", nargs="*", default=["adaptive", "heuristic"],
                       help="adaptive tau policies to run too: adaptive (cost model) heuristic (grow/shrink); default both")
    bench.add_argument("--repeats", type=int, default=5,
                       help="passes timed for each T(k) and the draft's cost, median taken (default 5)")
    bench.add_argument("--no-assisted", action="store_true",
                       help="leave out transformers' generate and assisted generation (assistant_model=draft)")
    bench.add_argument("--plot", default=None, help="also save measured and predicted speedup against tau to this PNG")
    bench.add_argument("--dtype", default=None, help="float32 (default) or bfloat16 (where the hardware has it)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("--drafters", action="store_true",
                       help="compare drafters instead of kernel paths: the draft model, the target's quantized copy, "
                            "two-level drafting and prompt lookup at each tau (default 2 4 6), beside transformers' "
                            "prompt lookup and assisted generation, prompt by prompt in turns")
    bench.add_argument("--trees", action="store_true",
                       help="chains against token trees from the draft model: each tau (default 2 3 4), dynamic trees "
                            "of each --budgets, a static 4-2-1-1 tree, with the cost model's prediction per row")
    bench.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16], help="node budgets of the dynamic trees")
    bench.add_argument("--tree-drafter", default="draft", choices=["draft", "lookup", "quantized", "head"],
                       help="with --trees: what proposes the chains and trees: the draft model (default), prompt lookup "
                            "(its matches as branches), the target's quantized copy, or the feature head (its trees "
                            "grown a level at a time)")
    bench.add_argument("--levels", type=int, default=None,
                       help="with --trees: also grow each budget's tree a level at a time, in this many draft passes")
    bench.add_argument("--json", default=None, help="also write the report to this JSON file")
    bench.add_argument("--device", default=None)
    bench.set_defaults(run=cmd_bench)

    ex = sub.add_parser("exercises", help="regenerate exercises/ from solutions/")
    ex.add_argument("--check", action="store_true", help="only compare; exit 1 if exercises/ is out of date")
    ex.set_defaults(run=cmd_exercises)

    gr = sub.add_parser("grade", help="grade a folder of learners' exercise notebooks (CSV of points per task)")
    gr.add_argument("submissions", help="a folder of notebooks (one per learner) or of one folder per learner")
    gr.add_argument("--exercise", default=None, help="which exercise they are (name or prefix, e.g. 04); "
                                                     "default: from each notebook's metadata or file name")
    gr.add_argument("--timeout", type=float, default=300, help="seconds each notebook may run (default 300)")
    gr.add_argument("--out", default="grades.csv", help="the CSV to write (default grades.csv; replaced if it exists)")
    gr.add_argument("--memory-mb", type=int, default=6144, help="address space each notebook's kernel may use (default 6144)")
    gr.add_argument("--max-processes", type=int, default=None,
                    help="processes and threads each notebook's sandbox may have at once (default: 256, or 4 per core "
                         "where that is more)")
    gr.add_argument("--trusted", action="store_true",
                    help="run the notebooks WITHOUT a sandbox (only where bubblewrap cannot be had, for notebooks you "
                         "trust); the summary and the CSV say so")
    _class_options(gr)
    gr.set_defaults(run=cmd_grade)

    gb = sub.add_parser("gradebook", help="merge rubric scores into a grades CSV, one row per learner, feedback files "
                                          "(without running the notebooks again)")
    gb.add_argument("grades", help="the CSV that `grade` wrote")
    gb.add_argument("--out", default=None, help="write the long CSV with the rubric scores merged here (it may be "
                                                "the same file)")
    _class_options(gb)
    gb.set_defaults(run=cmd_gradebook)

    nbg = sub.add_parser("nbgrader", help="write an nbgrader course folder (source/ from solutions/, hidden checks "
                                          "as hidden tests) for nbgrader's generate_assignment and autograde")
    nbg.add_argument("course", help="the course folder to write (new, empty, or one this command wrote)")
    nbg.add_argument("exercises", nargs="*", help="which exercises (names or numbers like 04; default: all)")
    nbg.set_defaults(run=cmd_nbgrader)

    chk = sub.add_parser("check", help="run your exercise notebooks (each in a fresh kernel, unchanged) and list "
                                       "which checks pass")
    chk.add_argument("exercises", nargs="*", help="which exercises (names, file names or numbers like 04; default: all)")
    chk.add_argument("--folder", default="exercises", help="the folder of your exercise notebooks (default: exercises)")
    chk.add_argument("--timeout", type=float, default=600, help="seconds a cell may run (default 600)")
    chk.set_defaults(run=cmd_check)

    rel = sub.add_parser("release", help="write the learners' copy of the course into a folder")
    rel.add_argument("folder", help="where to write it: a new or empty folder, or an earlier release to replace")
    rel.set_defaults(run=cmd_release)

    doc = sub.add_parser("doctor", help="check the set-up: one OK/FAIL line per check, with a fix for each FAIL")
    doc.add_argument("--no-model", action="store_true",
                     help="skip loading and timing the target (the kernel path check); a second or two instead of ~10 s")
    doc.set_defaults(run=cmd_doctor)

    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
