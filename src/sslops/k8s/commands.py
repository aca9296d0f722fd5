"""The ``sslops submit`` and ``sslops render`` subcommands (parsers and handlers).

``sslops.cli`` registers them with :func:`add_parsers` and hands them over with
:func:`run`; the work is in ``submit`` and ``render``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("submit", "render")
OVERLAYS = Path("manifests") / "overlays"
# render's defaults, applied in run() so that a flag given for a target that does not read it
# can be told from one left out (argparse's default would hide that)
RENDER_DEFAULTS = {"chart": "helm/sslops", "overlay": "onprem", "namespace": "kubeflow",
                   "release": "sslops"}  # fmt: skip
# From a laptop, KFP's API is reached through a port-forward (docs/deploy.md, step 9).
PORT_FORWARD = "kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
HOST_HELP = f"KFP API endpoint, e.g. http://localhost:8080 while '{PORT_FORWARD}' runs"


def add_parsers(sub: Any, add_config_args: Callable[[argparse.ArgumentParser], None]) -> None:
    submit = sub.add_parser(
        "submit",
        help="compile, upload a new pipeline version to KFP and start a run",
        description="Compile the pipeline for the config (its platform section places the "
        "tasks), upload it to the KFP endpoint as a new version of 'sslops-ssl-pipeline' "
        "(or '-multinode' for pretrain.launcher trainjob/pytorchjob) and start a run.",
        epilog="example:\n  sslops submit --config configs/adult.yaml --host http://localhost:8080 "
        "--run-name adult-1pct",
    )
    add_config_args(submit)
    submit.add_argument("--host", required=True, metavar="URL", help=HOST_HELP)
    submit.add_argument(
        "--experiment", default="sslops", metavar="NAME", help="KFP experiment (created if missing)"
    )
    submit.add_argument("--namespace", metavar="NS", help="KFP profile namespace (multi-user)")
    submit.add_argument("--service-account", metavar="SA", help="service account of the run")
    submit.add_argument(
        "--run-name",
        metavar="NAME",
        help="display name of the run (default: the pipeline's name and the UTC time, "
        "e.g. sslops-pipeline-20261201-093000Z)",
    )

    render = sub.add_parser(
        "render",
        help="print the Kubernetes manifests for review (helm, kustomize or the training job)",
        description="helm: the chart rendered with --values files (like helm template); "
        "kustomize: an overlay built with kubectl kustomize; trainjob: the TrainJob or "
        "PyTorchJob that pretrain.launcher would create for the config.",
        epilog="examples:\n"
        "  sslops render --target helm --values helm/sslops/values-aws.yaml\n"
        "  sslops render --target kustomize --overlay gcp\n"
        "  sslops render --target trainjob --config configs/mnist.yaml "
        "--set pretrain.launcher=trainjob \\\n"
        "      --set platform.storage.workspace_pvc=sslops-workspace",
    )
    add_config_args(render)
    render.add_argument(
        "--target", required=True, choices=("helm", "kustomize", "trainjob"),
        help="what to render (see above)",
    )  # fmt: skip
    render.add_argument(
        "--values", action="append", default=[], type=Path, metavar="FILE",
        help="helm values file (repeatable; later files win)",
    )  # fmt: skip
    render.add_argument(
        "--chart",
        type=Path,
        metavar="DIR",
        help=f"helm chart folder (default: {RENDER_DEFAULTS['chart']})",
    )
    render.add_argument(
        "--overlay", metavar="NAME|DIR",
        help="kustomize overlay: onprem, aws, gcp, azure, or a directory "
        f"(default: {RENDER_DEFAULTS['overlay']})",
    )  # fmt: skip
    render.add_argument(
        "--namespace", metavar="NS",
        help="namespace of the rendered objects, helm and trainjob "
        f"(default: {RENDER_DEFAULTS['namespace']})",
    )  # fmt: skip
    render.add_argument(
        "--release",
        metavar="NAME",
        help=f"helm release name (default: {RENDER_DEFAULTS['release']})",
    )


# The render flags that apply to some targets only (None: not given, the default applies).
_RENDER_FLAGS = {
    "--values": ("values", ("helm",)),
    "--chart": ("chart", ("helm",)),
    "--release": ("release", ("helm",)),
    "--overlay": ("overlay", ("kustomize",)),
    "--namespace": ("namespace", ("helm", "trainjob")),
    "--config": ("config", ("trainjob",)),
    "--set": ("overrides", ("trainjob",)),
}


def _check_render_flags(args: argparse.Namespace) -> None:
    """Refuse a flag the target does not read rather than ignore it silently."""
    from sslops.errors import ConfigError

    for flag, (dest, targets) in _RENDER_FLAGS.items():
        if getattr(args, dest) not in (None, []) and args.target not in targets:
            raise ConfigError(f"{flag} applies to --target {' and '.join(targets)} only")


def run(args: argparse.Namespace) -> int:
    from sslops.config import load_config

    if args.command == "submit":
        from sslops.k8s.submit import submit

        done = submit(
            load_config(args.config, args.overrides),
            args.host,
            args.experiment,
            namespace=args.namespace,
            service_account=args.service_account,
            run_name=args.run_name,
        )
        print(f"pipeline version {done.version_name} ({done.version_id})")
        print(f"run {done.run_id}: {done.url}")
        return 0
    from sslops.k8s import render

    _check_render_flags(args)
    given = {k: getattr(args, k) for k in RENDER_DEFAULTS}
    chart, name, namespace, release = (
        RENDER_DEFAULTS[k] if v is None else v for k, v in given.items()
    )
    if args.target == "helm":
        print(render.render_helm(Path(chart), args.values, release, namespace), end="")
    elif args.target == "kustomize":
        overlay = Path(name)
        path = overlay if overlay.is_dir() else OVERLAYS / name
        print(render.render_kustomize(path, OVERLAYS), end="")
    else:
        cfg = load_config(args.config, args.overrides)
        print(render.render_trainjob(cfg, namespace), end="")
    return 0
