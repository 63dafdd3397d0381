"""`san-search attack`: the adaptive attacker on an exported ensemble, and its budget options
(shared with `ensemble select --attack`)."""

from __future__ import annotations

import argparse

from san_search.cli.options import Subparsers, add_allow_unsigned
from san_search.ensemble.attack import Budget


def add_budget_options(p: argparse.ArgumentParser) -> None:
    """The attacker's training budget (`san_search.ensemble.attack.Budget`; defaults: a few minutes
    on 2 CPU cores at 32 px)."""
    d = Budget()
    p.add_argument("--attack-images", type=int, default=d.images,
                   help=f"train images the attacker perturbs and trains on ({d.images})")
    p.add_argument("--attack-epochs", type=int, default=d.epochs,
                   help=f"passes over them ({d.epochs})")
    p.add_argument("--attack-lr", type=float, default=d.lr,
                   help=f"AdamW learning rate ({d.lr:g})")
    p.add_argument("--attack-batch", type=int, default=d.batch, help=f"batch size ({d.batch})")
    p.add_argument("--attack-seed", type=int, default=d.seed,
                   help=f"seed of the sample, the weights and the batches ({d.seed})")


def budget_of(args: argparse.Namespace) -> Budget:
    return Budget(args.attack_images, args.attack_epochs, args.attack_lr, args.attack_batch,
                  args.attack_seed)


def add_attack(sub: Subparsers) -> None:
    p = sub.add_parser(
        "attack", help="retrain gender classifiers on an ensemble's outputs (adaptive attacker)",
        description="Perturb a seeded sample of the dataset's train split with the exported "
        "ensemble (random policy, chain policy, best single member, and the matched noise "
        "of its test table), train two gender architectures of the zoo (a test-role one and "
        "the best aux one) on (perturbed, label), and on (perturbed, label) + (original, "
        "label), each from scratch and fine-tuned from the zoo's weights, then score them "
        "on the perturbed test split. Writes <ensemble>/attack.json, adds the table to the "
        "model card, and logs an MLflow run nested under the ensemble's run.")
    p.add_argument("--ensemble", required=True, help="export folder (`ensemble export --out`)")
    p.add_argument("--data", required=True, help="the prepared dataset the ensemble was made "
                   "for")
    p.add_argument("--zoo", required=True, help="the zoo of that dataset")
    p.add_argument("--no-mlflow", action="store_true",
                   help="log nothing to MLflow (by default a run nested under the ensemble's "
                   "run, when the export names one)")
    add_budget_options(p)
    add_allow_unsigned(p)
    p.set_defaults(func=cmd_attack)


def cmd_attack(args: argparse.Namespace) -> int:
    from san_search.ensemble.export import attack_export

    attack_export(args.ensemble, args.data, args.zoo, budget_of(args),
                  mlflow=not args.no_mlflow, allow_unsigned=args.allow_unsigned)
    return 0
