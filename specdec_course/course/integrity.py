"""Graded work is the learner's own: which of the course's functions answer which graded task, and how the grader
keeps them out of a graded function.

Two layers, both run by the grader (this module is hidden from learners' kernels, like ``hidden_checks``):

* **withheld** (``stripped_sources``): while a notebook of exercise E is graded, its sandboxed kernel sees the course
  package with the reference implementations of E's graded tasks replaced by stubs that raise ``ReferenceWithheld``;
  ``references`` and ``hidden_checks`` are not there at all. A graded function that is, calls or wraps one of them
  (alias, wrapper, ``import ... as``, ``getattr`` by a string, a module attribute) fails on every case, whatever the
  learner's kernel does: the code is not in the sandbox to be found. Everything else in the package (what the
  notebooks legitimately call) still works.
* **read** (``delegations``): the grader also reads the learner's code cells (the notebook file, not the kernel) and
  names what a graded function reaches: a course function withheld for that task, or a library shortcut that does the
  task for it (``model.generate`` for a generation loop). Such a task scores 0 with the reason, even where the call
  would have gone unnoticed at run time.

``WITHHELD[exercise][graded name]`` lists ``"module:name"`` (module relative to ``specdec_course``) of the package's
functions and classes that answer that task; ``SHORTCUTS[exercise][graded name]`` lists attribute names (called on
anything) that do the task for the learner.
"""
from __future__ import annotations

WITHHELD: dict[str, dict[str, tuple[str, ...]]] = {
    "00_autoregressive_generation": {
        "greedy_next_token": (),
        "greedy_generate": ("generation:autoregressive_generate",),
        "sample_next_tokens": ("generation:pick_token", "draft:distribution"),
    },
    "01_greedy_draft_generation": {
        "draft_tokens": ("draft:draft_tokens", "generation:autoregressive_generate"),
        "draft_tokens_fed": (),  # nothing in the package counts them: the learner's own accounting
    },
    "02_parallel_verification": {
        "verify": ("verify:verify", "verify:verify_logits"),
        "argmax_flips": (),  # takes logit tensors: generation:mismatch_margin works on a model and answers nothing here
    },
    "03_acceptance_rule": {
        "textbook_accept": ("accept:accept", "accept:consecutive_accepted"),
        "by_hand": ("accept:accept", "accept:consecutive_accepted"),
        "acceptance_rate": (),
        "simulate_acceptance": ("accept:accept",),
    },
    "04_correction_and_the_full_loop": {
        "greedy_correction": ("correction:correction_token",),
        "sequence_after_step": (),
        "speculative_greedy": ("speculative:speculative_generate", "tree:tree_generate", "generation:autoregressive_generate",
                               "perf.benchmark:assisted_generate", "perf.benchmark:transformers_generate"),
        "sample_corrections": ("correction:residual", "correction:correction_token"),
        "first_divergence": ("perf.benchmark:first_mismatch",),
    },
    "05_kv_caching": {
        "rollback": ("cache:rollback",),
        "kv_bytes_per_token": ("cache:kv_bytes_per_token", "cache:kv_cache_bytes"),
        "cache_step": ("cache:rollback",),
        "cache_plan": ("cache:kv_bytes_per_token", "cache:kv_cache_bytes"),
    },
    "06_performance_analysis": {
        # not accept:alpha_from_steps / kept_fraction_of_steps, kernels:pass_times / current_pass_times: a trace (the
        # set-up of Task 5) and load_pair need them; SHORTCUTS names the first and the timers instead
        "kept_fraction": ("perf.cost_model:kept_fraction",),
        "alpha_from_steps": (),
        "choose_tau": ("perf.cost_model:best_tau", "perf.cost_model:predict", "perf.cost_model:expected_tokens_per_step",
                       "perf.analysis:expected_speedup"),
        "measure_target_ms": ("generation:forward_time", "perf.cost_model:measure_costs", "perf.clock:added_costs"),
        "time_split": ("perf.trace:analyse_trace",),
        "tau_under_budget": ("perf.cost_model:best_tau", "perf.cost_model:expected_tokens_per_step",
                             "perf.analysis:expected_speedup"),
    },
    "07_control_and_production": {
        "GrowShrinkPolicy": ("perf.policies:GrowShrink",),
        "token_gaps": ("perf.latency:arrival_times",),
        "capped_tau": ("perf.cost_model:best_tau", "perf.cost_model:expected_tokens_per_step",
                       "perf.analysis:expected_speedup"),
        "diagnose": ("perf.trace:analyse_trace",),
    },
    "08_training_a_draft_model": {
        "draft_agreement": ("distill:label_accuracy", "perf.analysis:greedy_agreement", "perf.analysis:greedy_matches"),
        "expected_tokens_per_step": ("perf.cost_model:expected_tokens_per_step",),
        "distillation_loss": (),
        "choose_draft": ("perf.analysis:expected_speedup", "course.viz:best_speedup"),
        "held_out_alpha": ("distill:label_accuracy",),
        "measure_draft": ("distill:label_accuracy", "perf.cost_model:draft_costs", "perf.cost_model:measure_costs"),
    },
    "09_choosing_a_drafter": {
        "find_continuation": ("drafters.lookup:find_continuation", "drafters.lookup:find_continuations",
                              "drafters.lookup:lookup_tree", "drafters.lookup:PromptLookup"),
        "drafter_speedup": ("perf.analysis:expected_speedup", "course.viz:best_speedup"),
        "mix_speedup": ("perf.analysis:expected_speedup", "course.viz:best_speedup"),
        "choose_drafter": ("perf.analysis:expected_speedup", "course.viz:best_speedup", "perf.cost_model:best_tau"),
        "ContextBigramDrafter": ("drafters.lookup:PromptLookup", "drafters.lookup:find_continuation",
                                 "drafters.lookup:find_continuations"),
    },
    "10_token_trees": {
        "tree_mask": ("tree:tree_mask",),
        "longest_accepted_path": ("tree:accept_greedy", "tree:accept_sampling"),
        "best_static_shape": ("tree:expected_accepted_length", "tree:static_tree", "perf.trees:predicted_speedup"),
    },
}

SHORTCUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "00_autoregressive_generation": {"greedy_generate": ("generate",)},
    "04_correction_and_the_full_loop": {"speculative_greedy": ("generate",)},
    "06_performance_analysis": {"alpha_from_steps": ("alpha_from_steps",),
                                "measure_target_ms": ("pass_times", "current_pass_times", "calibrate", "forward_time")},
}


# --------------------------------------------------------------------------- withheld: the package without the answers
import ast  # noqa: E402 - below the tables, which are what a reader of this module looks for first
import importlib  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1]
WITHHELD_ERROR = "ReferenceWithheld"
GRADER_ONLY = ("course/references.py", "course/hidden_checks.py", "course/integrity.py")  # not in a learner's kernel


def _module_path(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def withheld(exercise: str) -> dict[str, dict[str, str]]:
    """{module: {name: graded task's function}} of what the kernel of ``exercise`` must not have."""
    out: dict[str, dict[str, str]] = {}
    for graded, references in WITHHELD.get(exercise, {}).items():
        for reference in references:
            module, _, name = reference.partition(":")
            out.setdefault(module, {})[name] = graded
    return out


def _stub(node, module: str, graded: str) -> str:
    qualified = f"specdec_course.{module}.{node.name}"
    message = (f"{qualified} is the course's own answer to {graded} (graded in this exercise), so it is withheld "
               f"while grading: write your own code")
    if isinstance(node, ast.ClassDef):
        return (f"class {node.name}:\n    def __init__(self, *args, **kwargs):\n"
                f"        raise {WITHHELD_ERROR}({message!r})\n")
    return f"def {node.name}(*args, **kwargs):\n    raise {WITHHELD_ERROR}({message!r})\n"


def stripped_source(module: str, names: dict[str, str]) -> str:
    """The source of ``specdec_course.<module>`` with each top-level function or class in ``names`` made a stub that
    raises ReferenceWithheld (everything else as it was)."""
    text = _module_path(module).read_text()
    lines = text.split("\n")
    nodes = {node.name: node for node in ast.parse(text).body
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names}
    missing = set(names) - set(nodes)
    if missing:
        raise ValueError(f"integrity.WITHHELD names {sorted(missing)} in specdec_course.{module}, which has no such "
                         "top-level function or class")
    for node in sorted(nodes.values(), key=lambda n: n.lineno, reverse=True):
        start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        lines[start:node.end_lineno] = _stub(node, module, names[node.name]).rstrip("\n").split("\n")
    lines.append(f"\n\nclass {WITHHELD_ERROR}(RuntimeError):\n"
                 "    \"\"\"A course function that answers a graded task was called while that task was graded.\"\"\"\n")
    return "\n".join(lines)


def stripped_sources(exercise: str, folder: Path) -> dict[str, str]:
    """Write the withheld modules of ``exercise`` (and empty grader-only modules) under ``folder``; {original file:
    stripped file} for the sandbox."""
    folder = Path(folder)
    out = {}
    for name in GRADER_ONLY:  # an importable module with nothing in it
        path = folder / "grader_only" / Path(name).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('"""Only the grader has this module: it is empty while a notebook is graded."""\n')
        out[str(PACKAGE / name)] = str(path)
    for module, names in withheld(exercise).items():
        path = folder / f"{module}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stripped_source(module, names))
        out[str(_module_path(module))] = str(path)
    return out


# --------------------------------------------------------------------------- read: what a graded function reaches
_MAGIC = re.compile(r"^\s*[%!].*$", re.M)
_CODE_FROM_TEXT = {"exec", "eval", "compile", "__import__"}


def _parse(source: str):
    try:
        return ast.parse(_MAGIC.sub("pass", source))
    except SyntaxError:
        return None


def _course_object(path: str):
    """The object a dotted path names inside specdec_course, or None."""
    parts = path.split(".")
    if parts[0] != "specdec_course":
        return None
    obj = None
    for index in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:index]))
        except ImportError:
            continue
        for attr in parts[index:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


class _Reader:
    """Module-level names of a notebook's code cells: what each learner definition is, and which course objects and
    library calls it reaches."""

    def __init__(self, sources: list[str]):
        self.course: dict[str, str] = {}        # name -> dotted path inside specdec_course
        self.defs: dict[str, list] = {}         # name -> defining nodes (def, class, the value assigned)
        self.imported: set[str] = set()         # names imported from anywhere (defined, not by the learner)
        self.stars: list[str] = []              # course modules imported with *
        for tree in filter(None, map(_parse, sources)):
            for node in tree.body:
                self._bind(node)

    def _bind(self, node) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "specdec_course":
                    self.course[alias.asname or "specdec_course"] = alias.name if alias.asname else "specdec_course"
                self.imported.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if node.module.split(".")[0] == "specdec_course" and alias.name == "*":
                    self.stars.append(node.module)
                elif node.module.split(".")[0] == "specdec_course":
                    self.course[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                self.imported.add(alias.asname or alias.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.defs.setdefault(node.name, []).append(node)
            self.course.pop(node.name, None)  # the learner's own definition replaces an earlier alias
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]:
                    self.defs.setdefault(name, []).append(node.value)
                    path = self.resolve(node.value)
                    if path:
                        self.course[name] = path
                    else:
                        self.course.pop(name, None)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self._bind(child)
            for handler in getattr(node, "handlers", []):
                for child in handler.body:
                    self._bind(child)

    def resolve(self, node) -> str | None:
        """The dotted course path an expression names (``sc.draft_tokens``, ``getattr(sc, "verify")``), else None."""
        if isinstance(node, ast.Name):
            if node.id in self.course or node.id in self.defs:
                return self.course.get(node.id)
            return next((f"{m}.{node.id}" for m in self.stars if hasattr(_course_object(m), node.id)), None)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            if node.func.id == "getattr" and len(node.args) >= 2:
                base = self.resolve(node.args[0])
                if base:
                    name = node.args[1]
                    return f"{base}.{name.value}" if isinstance(name, ast.Constant) and isinstance(name.value, str) \
                        else f"{base}.<computed>"
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                isinstance(node.args[0].value, str) and node.args[0].value.startswith("specdec_course"):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                return node.args[0].value
        return None

    def reached(self, name: str) -> tuple[list, bool]:
        """(nodes of ``name``'s definition and of every learner definition it uses, found or not)."""
        seen, todo, nodes = set(), [name], []
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for node in self.defs.get(current, [])[-1:]:  # the definition in effect: the last one
                nodes.append(node)
                todo += [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in self.defs]
        return nodes, name in self.defs or name in self.imported


def _why(reader: _Reader, path: str, references: dict) -> str | None:
    """Why reaching course ``path`` delegates the task, or None."""
    if path.endswith(".<computed>"):
        base = _course_object(path.rsplit(".", 1)[0])
        if base is not None and any(getattr(ref, "__module__", "").startswith(getattr(base, "__name__", "?"))
                                    for ref in references.values()):
            return f"reads {path.rsplit('.', 1)[0]} by a computed name (getattr), where the course's answer lives"
        return None
    if path.startswith(tuple(f"specdec_course.course.{Path(name).stem}" for name in GRADER_ONLY)):
        return f"uses {path}, the grader's own answers (not in a learner's kernel while grading)"
    obj = _course_object(path)
    for reference, ref_obj in references.items():
        if obj is not None and obj is ref_obj:
            return f"uses {path}, the course's own implementation of this task ({reference})"
    return None


def delegations(sources: list[str], exercise: str) -> dict[str, str]:
    """{graded name: reason} for each graded function of ``exercise`` that, read from the notebook's code cells, is,
    calls or wraps a course function withheld for it, calls a library shortcut that does the task, or runs code from a
    string the grader cannot read."""
    reader = _Reader(sources)
    found = {}
    for graded, paths in WITHHELD.get(exercise, {}).items():
        references = {}
        for reference in paths:
            module, _, name = reference.partition(":")
            references[f"specdec_course.{module}.{name}"] = getattr(importlib.import_module(f"specdec_course.{module}"), name)
        if graded in reader.course:  # `graded = sc.x`, `from specdec_course... import x as graded`
            why = _why(reader, reader.course[graded], references)
            if why:
                found[graded] = f"{graded} is {reader.course[graded]}: {why.split(', ', 1)[-1]}" \
                    if why.startswith("uses") else f"{graded} {why}"
                continue
        nodes, _ = reader.reached(graded)
        for node in nodes:  # names assigned inside the definitions: `f = sc.draft_tokens`, `m = import_module(...)`
            for child in ast.walk(node):
                if isinstance(child, ast.Assign) and (path := reader.resolve(child.value)):
                    for name in [n.id for t in child.targets for n in ast.walk(t) if isinstance(n, ast.Name)]:
                        reader.course.setdefault(name, path)
        for node in nodes:
            for child in ast.walk(node):
                if isinstance(child, (ast.Attribute, ast.Name, ast.Call)):
                    path = reader.resolve(child)
                    why = _why(reader, path, references) if path else None
                    if why:
                        found[graded] = f"{graded} {why}"
                        break
                if isinstance(child, ast.Call):
                    func = child.func
                    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                    if called in SHORTCUTS.get(exercise, {}).get(graded, ()):
                        found[graded] = f"{graded} calls .{called}(), which does this task for it: write the loop yourself"
                        break
                    computed_import = called == "import_module" and not (
                        child.args and isinstance(child.args[0], ast.Constant))
                    if isinstance(func, ast.Name) and func.id in _CODE_FROM_TEXT or computed_import:
                        found[graded] = (f"{graded} runs code from a string or a computed module name ({called}), which "
                                         "the grader cannot read: "
                                         "write the code in the cell")
                        break
            if graded in found:
                break
    return found
