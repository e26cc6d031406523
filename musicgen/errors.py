"""Errors musicgen raises for bad input; the CLI turns them into one-line messages.

Every error carries its facts as fields (the source, the argument, the limit), so that callers
such as the Serve app decide by type and field, never by reading the message.
"""


class MusicgenError(Exception):
    """Base class: an error whose message is meant for the user, without a traceback."""


class MidiError(MusicgenError, ValueError):
    """A MIDI source could not be read or converted; the message names the source."""

    def __init__(self, source, reason):
        self.source = str(source)
        self.reason = str(reason)
        super().__init__(f"{self.source}: {self.reason}")


class PromptTooLong(MidiError):
    """A MIDI source whose roll would be longer than a limit: ``steps`` (at least) over ``limit``."""

    def __init__(self, source, steps: int, limit: int):
        self.steps, self.limit = int(steps), int(limit)
        super().__init__(source, f"roll would be {self.steps} steps long, more than max_steps={self.limit}")


class DataError(MusicgenError, ValueError):
    """A dataset, path or argument is missing or malformed; the message names it."""


class ArgumentError(DataError):
    """An argument out of its range: ``field`` (its name), ``value`` and what it ``must`` be."""

    def __init__(self, field: str, value, must: str):
        self.field, self.value, self.must = field, value, must
        super().__init__(f"{field} must be {must}, not {value!r}")


def one_line(e: BaseException) -> str:
    """The first line of an error's message, or its type's name if it has none (for one-line
    messages on the command line, in manifests and in HTTP errors)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
