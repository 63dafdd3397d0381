"""Plain helpers that several test files share (fixtures live in conftest.py): a tiny SAN
candidate for the synthetic problem, and a look at this machine's processes through /proc."""

from __future__ import annotations

import os
from pathlib import Path

from san_search.config import CandidateConfig


def tiny_candidate(**kw: object) -> CandidateConfig:
    """A candidate small enough to train in seconds on the `problem` fixture's data and zoo."""
    base = dict(aux_gender=("g_aux",), aux_matcher="m_aux", depth=2, width=4, epochs=2,
                images_per_epoch=64, batch_size=16, matcher_warmup=1)
    return CandidateConfig(**{**base, **kw})  # type: ignore[arg-type]


def process_tree(tag: str) -> set[int]:
    """Processes whose command line mentions `tag`, and all their descendants (/proc)."""
    info: dict[int, tuple[str, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        info[int(d)] = (cmd, ppid)
    found = {p for p, (cmd, _) in info.items() if tag in cmd and p != os.getpid()}
    grew = True
    while grew:
        kids = {p for p, (_, pp) in info.items() if pp in found} - found
        found |= kids
        grew = bool(kids)
    return found


def default_sigint() -> None:
    """`preexec_fn` for a command a test will Ctrl-C: a shell's background job (nohup, `&`,
    some CI runners) starts with SIGINT ignored, which Python then keeps, so SIGINT would do
    nothing. Restores the default, as an interactive terminal has it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
