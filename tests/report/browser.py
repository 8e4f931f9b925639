"""Debian's Chromium and pdflatex as the tests use them (skipped with the reason when absent)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    return exe


def browse(url: str, *args: str) -> subprocess.CompletedProcess:
    """Open a page headless with a throwaway profile; stdout holds --dump-dom's DOM."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=600)


def console_lines(p: subprocess.CompletedProcess) -> list[str]:
    """What the page wrote to the console (a log, a warning, an uncaught error)."""
    return [line for line in p.stderr.splitlines() if ":CONSOLE" in line]


def pdflatex(tex: Path) -> Path:
    """Compile a .tex file in its folder (twice, for references); return the PDF."""
    exe = shutil.which("pdflatex")
    if exe is None:
        pytest.skip("pdflatex is not installed (Debian: apt-get install texlive-latex-base "
                    "texlive-latex-recommended)")
    for _ in range(2):
        p = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", tex.name],
                           cwd=tex.parent, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:]
    return tex.with_suffix(".pdf")
