"""Every task has an entry in every stage's registry: adding a task is a checklist this test enforces.

The task registry (toolchain.runtime.tasks.TASKS) names each task once. Each stage keeps one registry
keyed by task name; an entry is either the stage's implementation or an explicit Unsupported(reason).
"""

from __future__ import annotations

import pytest

from toolchain.runtime.base import Model
from toolchain.runtime.tasks import TASKS, TaskSpec, Unsupported, register


def registries() -> dict[str, tuple[dict, type | None]]:
    """name -> (registry, the type every real entry must have; None: any callable)."""
    from toolchain.cli.render import PRINTERS
    from toolchain.export.parity import PARITY
    from toolchain.runtime import RUNTIMES
    from toolchain.serve.tabs import TABS, Tab
    from toolchain.train.stages import STAGES
    from toolchain.variants.gate import GATES, Gate
    from toolchain.web.pages import PAGES, Page

    return {"runtime class (runtime RUNTIMES)": (RUNTIMES, Model), "parity check (export PARITY)": (PARITY, None),
            "gate (variants GATES)": (GATES, Gate), "training stage (train STAGES)": (STAGES, None),
            "CLI printer (cli PRINTERS)": (PRINTERS, None), "demo tab (serve TABS)": (TABS, Tab),
            "in-browser page (web PAGES)": (PAGES, Page)}


def missing_entries(tasks=None, regs=None) -> list[str]:
    """One line per task and registry where the task has neither an implementation nor Unsupported(reason)."""
    tasks = TASKS if tasks is None else tasks
    regs = registries() if regs is None else regs
    problems = []
    for task in tasks:
        for what, (registry, kind) in regs.items():
            entry = registry.get(task)
            if isinstance(entry, Unsupported):
                continue
            if entry is None:
                problems.append(f"task {task!r} has no {what}: add one, or Unsupported('why') to say it has none")
            elif kind is Model and not (isinstance(entry, type) and issubclass(entry, Model)):
                problems.append(f"task {task!r}: the {what} entry {entry!r} is not a Model subclass")
            elif kind not in (None, Model) and not isinstance(entry, kind):
                problems.append(f"task {task!r}: the {what} entry {entry!r} is not a {kind.__name__}")
            elif kind is None and not callable(entry):
                problems.append(f"task {task!r}: the {what} entry {entry!r} is not callable")
    stray = [f"{what} has an entry for {key!r}, which is not a task in TASKS"
             for what, (registry, _) in regs.items() for key in registry if key not in tasks]
    return problems + stray


def test_every_task_is_complete_in_every_registry():
    assert len(TASKS) >= 3
    assert missing_entries() == []


def test_runtime_classes_implement_their_task_method():
    """The class registered for a task overrides the base's refusal of that task's method."""
    from toolchain.runtime import RUNTIMES

    for name, spec in TASKS.items():
        cls = RUNTIMES[name]
        assert getattr(cls, spec.method) is not getattr(Model, spec.method, None), f"{cls.__name__}.{spec.method}"


def test_a_new_task_without_entries_is_named_in_every_registry(monkeypatch):
    monkeypatch.setitem(TASKS, "translation", TaskSpec("translation", "logits", "translate", "AutoModelForSeq2SeqLM", 1e-4))
    problems = missing_entries()
    assert len(problems) == len(registries()), problems
    assert all("'translation'" in p and "Unsupported" in p for p in problems)


def test_unsupported_needs_a_reason_and_counts_as_an_entry():
    with pytest.raises(ValueError, match="needs a reason"):
        Unsupported("  ")
    regs = {"gate": ({"t": Unsupported("no metric yet")}, None), "printer": ({"t": print}, None)}
    assert missing_entries({"t": None}, regs) == []


def test_wrong_kinds_and_stray_keys_are_named():
    regs = {"runtime": ({"t": object}, Model), "printer": ({"t": 3, "old-task": print}, None)}
    problems = missing_entries({"t": None}, regs)
    assert any("not a Model subclass" in p for p in problems)
    assert any("not callable" in p for p in problems)
    assert any("'old-task', which is not a task" in p for p in problems)


def test_register_is_the_one_door_for_tasks(monkeypatch):
    spec = TaskSpec("x-task", "logits", "classify", "AutoModel", 1e-4)
    monkeypatch.setitem(TASKS, "x-task", spec)  # restored afterwards
    assert register(spec) is spec and TASKS["x-task"] is spec
