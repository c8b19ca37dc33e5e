"""The one root of every error relidar raises about a user's input, and what each carries.

Every error class in relidar (and relidar_ros) derives from :class:`RelidarError`, so the CLI and the
node's entry point catch one type, print one line and exit non-zero, and tests assert the type and
its fields (``path``, ``field``, ``hint``) instead of message wording (which rich re-wraps).

The one-line form is ``<path>: <field>: <message> (<hint>)``, each part present only when known.
"""

from __future__ import annotations

from pathlib import Path


class RelidarError(Exception):
    """An input relidar cannot use (or a step it cannot take), with where and how to fix it.

    ``path``: the file or folder at fault; ``field``: the config key, parameter, column or manifest
    entry at fault; ``hint``: what the user should do. ``message`` says what is wrong.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None,
                 hint: str | None = None) -> None:
        self.message = str(message)
        self.path = Path(path) if path is not None else None
        self.field = field
        self.hint = hint
        super().__init__(self.one_line())

    def __reduce__(self):
        # Pickled with its fields (DataLoader workers send errors to the training process this way).
        return (_rebuild_error, (type(self), self.message, self.path, self.field, self.hint))

    def one_line(self) -> str:
        """The message as the CLI prints it: one line, path and field first, the fix last."""
        parts = [str(self.path)] if self.path is not None else []
        if self.field:
            parts.append(self.field)
        text = ": ".join(parts + [self.message])
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())  # one line whatever the parts held


def _rebuild_error(cls: type[RelidarError], message: str, path: Path | None, field: str | None,
                   hint: str | None) -> RelidarError:
    return cls(message, path=path, field=field, hint=hint)
