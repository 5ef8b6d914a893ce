"""Run the fuzz targets with atheris: `python -m fuzz.run [--runs N] [TARGET ...]`.

Each target runs in its own process (libFuzzer exits the process when it stops),
seeded from the S/MIME interop corpus beside the repository. New corpus entries
go to var/fuzz/corpus/TARGET; a crashing input is written to
var/fuzz/findings/TARGET-crash-* and should be copied to
fuzz/regressions/TARGET/ so that the regression test replays it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from fuzz.cms_corpus import ENVELOPED_KINDS, SIGNED_KINDS, write_seeds

REPO = Path(__file__).resolve().parent.parent
INTEROP = REPO.parent / "shared" / "interop"
WORK = REPO / "var" / "fuzz"
TARGETS = (
    "cms_envelope",
    "cms_signed",
    "mime_detect",
    "mime_outgoing",
    "pem_import",
    "pkcs12_import",
    "smtp_session",
)
# The CMS targets take the DER of the corpus messages of these kinds.
CMS_SEED_KINDS = {"cms_envelope": ENVELOPED_KINDS, "cms_signed": SIGNED_KINDS}

SMTP_SEEDS = {
    "send.txt": (
        b"EHLO client.example\r\nMAIL FROM:<a@partner.example> BODY=8BITMIME\r\n"
        b"RCPT TO:<b@example.com>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
    ),
    "relay.txt": (
        b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<x@elsewhere.example>\r\n"
        b"RCPT TO:<y@example.com>\r\nRSET\r\nNOOP\r\nVRFY y\r\n"
    ),
    "extensions.txt": (
        b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGFhAGI=\r\n"
        b"MAIL FROM:<\xc3\xa9@example.com> SMTPUTF8 SIZE=10\r\nHELP MAIL\r\n"
    ),
}


def _seed_files(target: str) -> list[Path]:
    patterns = {
        "mime_detect": ("*.eml",),
        "mime_outgoing": ("*.eml",),
        "pem_import": ("*.pem", "*.crt", "*.p7b", "*.der"),
        "pkcs12_import": ("*.p12", "*.pfx"),
    }[target]
    return sorted(p for pattern in patterns for p in INTEROP.rglob(pattern))


def prepare_seeds(target: str) -> Path:
    """Copy or write the seed inputs of `target` into a folder of their own."""
    if target in CMS_SEED_KINDS:
        return write_seeds(target, CMS_SEED_KINDS[target], WORK / "seeds")
    seeds = WORK / "seeds" / target
    seeds.mkdir(parents=True, exist_ok=True)
    if target == "smtp_session":
        for name, content in SMTP_SEEDS.items():
            (seeds / name).write_bytes(content)
        return seeds
    for index, path in enumerate(_seed_files(target)):
        shutil.copyfile(path, seeds / f"{index:03d}-{path.name}")
    return seeds


def run_target(target: str, runs: int) -> int:
    corpus = WORK / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    findings = WORK / "findings"
    findings.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fuzz.engine",
        target,
        f"-runs={runs}",
        f"-artifact_prefix={findings}/{target}-",
        "-max_len=65536",
        "-timeout=30",
        "-print_final_stats=1",
        str(corpus),
        str(prepare_seeds(target)),
    ]
    print(f"== {target}: {runs} inputs", flush=True)
    return subprocess.run(command, cwd=REPO, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"default: {' '.join(TARGETS)}")
    parser.add_argument("--runs", type=int, default=200_000, help="inputs per target")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    failed = [t for t in args.targets or TARGETS if run_target(t, args.runs) != 0]
    if failed:
        print(f"findings in: {', '.join(failed)} (see {WORK / 'findings'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
