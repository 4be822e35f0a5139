"""Gradio pieces every tab shares: artifact and variant pickers, and handlers that never show a traceback."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from toolchain.runtime import ToolchainError
from toolchain.serve.context import Artifact, Ctx, variant_choices
from toolchain.serve.ui import gr

log = logging.getLogger("toolchain.serve.app")  # one logger for the whole app, as before the split

SERVER_FAILURE = "⚠️ Something went wrong on the server (details in its log); try again or change the input."


def guarded(fn: Callable[..., tuple], blanks: tuple) -> Callable[..., tuple]:
    """Wrap a handler returning (*outputs, message): any failure becomes blanks plus one readable line."""

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except ToolchainError as exc:
            return (*blanks, f"⚠️ {exc}")
        except Exception:  # never a traceback in the page; the server log has it
            log.exception("demo handler %s failed", fn.__name__)
            return (*blanks, SERVER_FAILURE)

    return wrapper


def guarded_stream(fn: Callable[..., Any], blanks: tuple) -> Callable[..., Any]:
    """guarded() for a handler that yields (*outputs, message) as it streams."""

    @functools.wraps(fn)
    def wrapper(*args):
        try:
            yield from fn(*args)
        except ToolchainError as exc:
            yield (*blanks, f"⚠️ {exc}")
        except Exception:
            log.exception("demo handler %s failed", fn.__name__)
            yield (*blanks, SERVER_FAILURE)

    return wrapper


def artifact_picker(arts: list[Artifact], elem_id: str):
    return gr.Dropdown([a.key for a in arts], value=arts[0].key, label="Artifact", visible=len(arts) > 1,
                       elem_id=f"{elem_id}-artifact")


def variant_picker(ctx: Ctx, art: Artifact, elem_id: str, label: str = "Variant", index: int = 0):
    choices = variant_choices(art, ctx)
    # allow_custom_value: the API may name any artifact's variants; the handler checks them
    return gr.Dropdown(choices, value=choices[min(index, len(choices) - 1)][1], label=label,
                       allow_custom_value=True, elem_id=elem_id)


def follow(ctx: Ctx, artifact, *pickers) -> None:
    """When the artifact changes, offer its variants in each picker (not an API endpoint)."""

    def update(key: str):
        choices = variant_choices(ctx.pick(key), ctx)
        return tuple(gr.Dropdown(choices=choices, value=choices[min(i, len(choices) - 1)][1])
                     for i in range(len(pickers)))

    artifact.change(update, artifact, list(pickers), api_visibility="private")
