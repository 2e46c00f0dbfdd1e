"""The package's layout shows its architecture, and no module imports (even inside a function) one that imports it back."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "specdec_course"


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, modules: set) -> set:
    """The package's modules that ``path`` imports anywhere in its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("specdec_course"):
                source = node.module
            else:
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                found.add(target if target in modules else source)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return {m for m in found if m in modules and m != name}


def _graph():
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {_module_name(p): _imports(p, modules) for p in PACKAGE.rglob("*.py")}


def _cycle(graph):
    """One import circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                return stack[stack.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_textbook_loop_sits_at_the_top_and_each_kind_of_tool_in_a_folder_of_its_own():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert {"draft", "verify", "accept", "correction", "speculative", "cache"} <= top
    assert {"lookup", "quantized", "two_level", "feature_head", "base"} <= {p.stem for p in (PACKAGE / "drafters").glob("*.py")}
    assert {"clock", "kernels", "cost_model", "benchmark", "trace", "policies"} <= {p.stem for p in (PACKAGE / "perf").glob("*.py")}
    assert {"checks", "hidden_checks", "quiz", "quizzes", "exercises", "grading", "doctor"} <= {
        p.stem for p in (PACKAGE / "course").glob("*.py")}
    assert not top & {"checks", "grading", "doctor", "benchmark", "kernels", "clock"}


def test_the_textbook_loop_needs_no_course_machinery():
    graph = _graph()
    seen, todo = set(), ["specdec_course.speculative"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph[module]
    assert not [m for m in seen if m.startswith("specdec_course.course")], sorted(seen)
