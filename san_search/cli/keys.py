"""`san-search keys generate`: the Ed25519 key pair that signs exports (`ensemble export
--sign`) and that `perturb --trust` checks them with."""

from __future__ import annotations

import argparse

from san_search.cli.options import Subparsers


def add_keys_generate(sub: Subparsers) -> None:
    kg = sub.add_parser(
        "generate", help="write a new Ed25519 signing key and its public key",
        description="Write <out>/signing.key (the private key, PEM, mode 0600: keep it on the "
        "machine that exports, for `ensemble export --sign`) and <out>/signing.pub (the "
        "public key, for `perturb --trust` or $SAN_SEARCH_TRUST_KEY). Existing key files are "
        "never replaced.")
    kg.add_argument("--out", required=True, help="folder for the two key files (created "
                    "with mode 0700 if missing)")
    kg.set_defaults(func=cmd_keys_generate)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from san_search.ensemble.signing import fingerprint, generate_keys, load_public_key

    private, public = generate_keys(args.out)
    print(f"private key: {private} (mode 0600; keep it off the machines that run perturb)")
    print(f"public key:  {public} (fingerprint {fingerprint(load_public_key(public))})")
    print(f"sign with `san-search ensemble export --sign {private}`, check with "
          f"`san-search perturb --trust {public}`")
    return 0
