"""What a long-running command tells the person at the terminal: the `Log` callback type that
every library entry point takes (`print` by default, a test's list.append, a quiet lambda)."""

from __future__ import annotations

from collections.abc import Callable

Log = Callable[[str], None]
