"""`python -m zoo verify`: checksums and schema, the model against its manifest, the test vectors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import CamError, GapcamError
from runtime.evaluation.compare import TOLERANCE
from runtime.formats.package import Package
from runtime.inference.providers import CPU
from runtime.inference.session import CamSession
from zoo.vectors import VECTORS, replay_vectors


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class VerifyReport:
    path: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def verify(path: str | os.PathLike) -> VerifyReport:
    """Run every check in order; a failed check stops the ones that depend on it."""
    report = VerifyReport(Path(path))
    try:
        package = Package(path)
    except CamError as err:
        report.checks.append(Check("checksums and manifest", False, str(err)))
        return report
    report.checks.append(
        Check("checksums and manifest", True, f"{package.reference}: {len(package.manifest.files)} files match their sha256")
    )
    try:
        session = CamSession(path, providers=[CPU])
    except CamError as err:
        report.checks.append(Check("model", False, str(err)))
        return report
    report.checks.append(Check("model", True, "loads; labels, input and output shapes agree with the manifest"))
    try:
        replay = replay_vectors(session, package.read(VECTORS))
    except GapcamError as err:
        report.checks.append(Check("test vectors", False, str(err)))
        return report
    report.checks.append(
        Check(
            "test vectors",
            replay["passed"],
            f"{replay['count']} inputs: logits {replay['logits_relative_error']:.1e}, CAMs {replay['cams_relative_error']:.1e} "
            f"relative (tolerance {TOLERANCE:.0e}), classes agree {replay['classes_agree']}, min box IoU {replay['min_box_iou']:.3f}",
        )
    )
    return report
