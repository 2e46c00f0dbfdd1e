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
    },
    "01_greedy_draft_generation": {
        "draft_tokens": ("draft:draft_tokens", "draft:Draft", "generation:autoregressive_generate"),
        "kept_per_position": (),
    },
    "02_parallel_verification": {
        "verify": ("verify:verify", "verify:verify_logits"),
        "cached_pass_gap": ("generation:mismatch_margin",),
    },
    "03_acceptance_rule": {
        "textbook_accept": ("accept:accept", "accept:consecutive_accepted"),
        "by_hand": (),
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
    },
    "06_performance_analysis": {
        "kept_fraction": ("perf.cost_model:kept_fraction", "accept:kept_fraction_of_steps"),
        "alpha_from_steps": ("accept:alpha_from_steps",),
        "choose_tau": ("perf.cost_model:best_tau", "perf.cost_model:predict"),
        "measure_target_ms": ("perf.cost_model:measure_costs", "perf.cost_model:draft_costs", "generation:forward_time",
                              "perf.kernels:pass_times", "perf.kernels:current_pass_times"),
        "time_split": ("perf.trace:analyse_trace",),
    },
    "07_control_and_production": {
        "GrowShrinkPolicy": ("perf.policies:GrowShrink",),
        "token_gaps": ("perf.latency:arrival_times",),
        "capped_tau": (),
        "diagnose": ("perf.trace:analyse_trace",),
    },
    "08_training_a_draft_model": {
        "draft_agreement": ("distill:label_accuracy", "perf.analysis:greedy_agreement", "perf.analysis:greedy_matches"),
        "expected_tokens_per_step": ("perf.cost_model:expected_tokens_per_step",),
        "distillation_loss": (),
        "choose_draft": (),
        "held_out_alpha": ("distill:label_accuracy",),
    },
    "09_choosing_a_drafter": {
        "find_continuation": ("drafters.lookup:find_continuation", "drafters.lookup:find_continuations"),
        "drafter_speedup": (),
        "best_tau": ("perf.cost_model:best_tau",),
        "choose_drafter": (),
        "ContextBigramDrafter": ("drafters.lookup:PromptLookup",),
    },
    "10_token_trees": {
        "tree_mask": ("tree:tree_mask",),
        "longest_accepted_path": ("tree:accept_greedy",),
        "best_static_shape": ("perf.trees:choose_tree_budget",),
    },
}

SHORTCUTS: dict[str, dict[str, tuple[str, ...]]] = {
    "00_autoregressive_generation": {"greedy_generate": ("generate",)},
    "04_correction_and_the_full_loop": {"speculative_greedy": ("generate",)},
}
