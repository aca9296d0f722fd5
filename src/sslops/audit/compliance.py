"""Where each item of the EU AI Act (Annex IV, Articles 10 and 12-15) and of NIST AI RMF
MEASURE is evidenced in the bundle, and what the provider must supply itself.

The mapping is data: each item names the requirement, the bundle files (glob patterns)
that evidence it, what those files show, and what only the provider can write. Items are
resolved against the files the bundle really holds, so a result that is absent (say, no
OOD evaluation was run) shows up as a gap instead of a claim. A row is never a finding
of conformity: ``evidenced`` means the files the item asks of a training pipeline are in
the bundle, nothing more. docs/audit.md explains the choices.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any, NamedTuple

ANNEX_IV = "EU AI Act Annex IV"
ARTICLES = "EU AI Act Articles"
NIST = "NIST AI RMF"

# What each status means, for the card and compliance.json's readers.
STATUS = {
    "evidenced": "the files this item asks of a training pipeline are in this bundle",
    "partial": "evidence is in this bundle; the provider must supply the rest",
    "missing": "the evidence sslops writes for this item is not in this bundle",
    "provider": "to be provided by the provider; bundle files at most support it",
}
DISCLAIMER = (
    "This table says where the bundle's files support each requirement; it is not a "
    "conformity assessment and does not show that any requirement is met. 'provider' items "
    "(the risk management system, the declaration of conformity, the post-market monitoring "
    "plan, human oversight, logging in operation, ...) are to be provided by the provider: "
    "sslops does not write them."
)
# Why a file sslops can write is not in this bundle, for the card's readers.
ABSENT_WHY = {
    "evidence/evaluate/ood.json": "no out-of-distribution split was evaluated; set prepare.ood",
    "changelog.json": "no previous bundle to compare with; set audit.previous_bundle",
    "signature.json": "the bundle is not signed; set audit.signing",
}


class Item(NamedTuple):
    framework: str
    ident: str
    requirement: str
    evidence: tuple[tuple[str, str], ...]  # (bundle file pattern, what that file shows)
    provider: str  # what the provider must supply; "" when the files are all the item asks
    provider_only: bool = False  # the provider's item: the files at most support it


_CARD = "model_card.*"
_METRICS = "evidence/evaluate/metrics.json"
_OOD = "evidence/evaluate/ood.json"
_EXPORT = "evidence/export/export.json"
_DATACARD = "evidence/prepare/datacard.*"
_FINETUNE = "evidence/finetune/finetune.json"
_SHORTCUTS_SHOWS = ("evidence/evaluate/shortcuts.json", "the share of decisions that change "
                    "when only a sensitive or group attribute is changed (direct use only; "
                    "proxies are not measured)")  # fmt: skip
_OOD_SHOWS = (_OOD, "each model on the held-out out-of-distribution split (robustness)")
_SIGNATURE_SHOWS = ("signature.json", "an Ed25519 signature over the manifest: which key "
                    "signed, not who")  # fmt: skip

ITEMS: tuple[Item, ...] = (
    Item(ANNEX_IV, "1", "General description: intended purpose, provider, version; interaction "
         "with other hardware and software; software versions; forms placed on the market; "
         "hardware it is intended to run on; user interface; instructions for use",
         ((_CARD, "the intended-use and owner text of the config (audit.intended_use, "
                  "audit.owner) and the deployed model's sha256"),
          ("environment.json", "Python, platform and package versions of the build"),
          ("sbom.cdx.json", "every software component, the model and the data by sha256"),
          ("run.json", "the run (KFP run id, container image) that built it"),
          (_EXPORT, "the ONNX model's opset and inputs")),
         "the provider's name and contact; the intended purpose in the provider's words "
         "(audit.intended_use holds a default unless set); the system's version history; the "
         "forms in which it is placed on the market; the hardware it is intended to run on "
         "(environment.json describes the build machine); the user interface; the instructions "
         "for use"),
    Item(ANNEX_IV, "2(a)", "Development methods and steps, including pre-trained systems or "
         "third-party tools used",
         (("config.json", "the resolved config of every stage"),
          ("lineage.json", "the chain raw data -> splits -> SSL checkpoint -> fine-tuned model "
                           "-> ONNX, with hashes and stage times"),
          ("evidence/pretrain/*", "the self-supervised pretraining results"),
          ("evidence/finetune/*", "the fine-tuning results"),
          ("sbom.cdx.json", "every third-party package used")), ""),
    Item(ANNEX_IV, "2(b)", "Design specifications: general logic, key design choices with "
         "rationale and assumptions (including about the persons or groups it is used on), what "
         "it optimises, expected output, trade-offs",
         ((_CARD, "the decision threshold and the output (a probability of the positive "
                  "class)"),
          ("config.json", "the objective and model choices"),
          (_FINETUNE, "the fairness policy, the candidates it chose from and the selected "
                      "accuracy-fairness trade-off")),
         "the rationale and assumptions behind these choices, including about the persons or "
         "groups the system is intended to be used on"),
    Item(ANNEX_IV, "2(c)", "System architecture and computational resources used to develop, "
         "train, test and validate",
         (("evidence/pretrain/*", "the encoder and its pretraining"),
          (_EXPORT, "the deployed graph: preprocessing and model in one ONNX file"),
          ("environment.json", "CPU, threads and packages of the machine that ran the audit "
                               "stage"),
          ("lineage.json", "each stage's start and end time")),
         "how the model fits into the provider's overall system, and the hardware used for "
         "stages that ran on other machines (environment.json describes one machine only)"),
    Item(ANNEX_IV, "2(d)", "Data requirements (datasheets): training data, provenance, scope, "
         "main characteristics, how obtained and selected, labelling, cleaning",
         ((_DATACARD, "the data card: rows and label rate per split, missing values, positive "
                      "rate per sensitive group, duplicates and identifier-like columns "
                      "dropped, the split"),
          ("lineage.json", "the raw files' sha256")),
         "how the data was obtained and selected, its labelling procedure, and its provenance "
         "beyond the raw files' hashes"),
    Item(ANNEX_IV, "2(e)", "Assessment of the human oversight measures needed (Art. 14), "
         "including technical measures to help deployers interpret outputs (Art. 13(3)(d))",
         ((_CARD, "what an overseer needs to read the outputs: the decision threshold, "
                  "per-group error rates and calibration, the limitations"),),
         "the assessment of the human oversight measures needed and who applies them; sslops "
         "builds no oversight function into the model"),
    Item(ANNEX_IV, "2(f)", "Pre-determined changes to the system and the technical solutions "
         "for continuous compliance (where applicable)",
         (("gates.json", "the policy gates a retrained model must pass before a bundle is "
                         "written"),
          ("config.json", "the config that retrains it the same way")),
         "the description of pre-determined changes (e.g. scheduled retraining) and the "
         "change-management procedure"),
    Item(ANNEX_IV, "2(g)", "Validation and testing: data used, metrics for accuracy, "
         "robustness and potentially discriminatory impacts; test logs and reports dated and "
         "signed by the responsible persons",
         ((_METRICS, "test-split accuracy and ROC AUC with bootstrap intervals; per-group "
                     "metrics and demographic-parity and equalized-odds gaps"),
          _SHORTCUTS_SHOWS,
          _OOD_SHOWS,
          (_DATACARD, "the test split's size and label rate"),
          ("gates.json", "the gate results"),
          (_EXPORT, "the ONNX model's agreement with the trained one"),
          ("lineage.json", "when each stage ran"),
          ("manifest.json", "the sha256 of every file"),
          _SIGNATURE_SHOWS),
         "test reports signed by the responsible persons (a registry approval, `sslops audit "
         "approve --by`, records a name; the bundle signature does not); robustness testing "
         "beyond the configured out-of-distribution split"),
    Item(ANNEX_IV, "2(h)", "Cybersecurity measures put in place",
         (("manifest.json", "the bundle's integrity (sha256 of every file)"),
          _SIGNATURE_SHOWS,
          ("sbom.cdx.json", "a software bill of materials a vulnerability scanner can read "
                            "(no scan result)")),
         "the cybersecurity measures of the deployed system: access control, hardening "
         "(docs/security.md describes the shipped deployment's), vulnerability management, "
         "protection against data or model poisoning and adversarial examples"),
    Item(ANNEX_IV, "3", "Monitoring, functioning and control: capabilities and limitations, "
         "accuracy for groups of persons and overall, foreseeable unintended outcomes and "
         "risks, human oversight measures, input data specification",
         ((_CARD, "the limitations found in the measurements"),
          (_METRICS, "overall and per-group accuracy with intervals"),
          (_EXPORT, "the input specification: the ONNX model's input columns and types")),
         "the foreseeable unintended outcomes and sources of risk to health, safety, "
         "fundamental rights and discrimination in view of the intended purpose; the human "
         "oversight measures"),
    Item(ANNEX_IV, "4", "Appropriateness of the performance metrics for the system",
         ((_CARD, "the metrics measured"), ("gates.json", "the limits the gates enforce")),
         "why these metrics and limits suit the system and its intended purpose"),
    Item(ANNEX_IV, "5", "Risk management system (Art. 9)",
         (("gates.json", "the policy gates: one control a risk management system can rely "
                         "on"),),
         "the risk management system: identification, estimation and evaluation of risks, "
         "and the measures taken, over the lifecycle", provider_only=True),
    Item(ANNEX_IV, "6", "Relevant changes made by the provider through the lifecycle",
         (("changelog.json", "measured differences from the previous bundle: metrics, ONNX "
                             "bytes, training-data hash, config keys"),),
         "the description of the changes made and why"),
    Item(ANNEX_IV, "7", "Harmonised standards applied, or the solutions adopted to meet "
         "Chapter III Section 2", (),
         "the list of harmonised standards or other specifications applied, or the solutions "
         "adopted; sslops applies none on the provider's behalf", provider_only=True),
    Item(ANNEX_IV, "8", "EU declaration of conformity (Art. 47)", (),
         "the declaration; this bundle is not one", provider_only=True),
    Item(ANNEX_IV, "9", "Post-market monitoring system and plan (Art. 72)", (),
         "the post-market monitoring system and plan; `sslops shadow` reports and successive "
         "bundles' change logs can feed it", provider_only=True),
    Item(ARTICLES, "Art. 10", "Data and data governance: examination of possible biases, data "
         "gaps, relevance and representativeness",
         ((_DATACARD, "rows and positive rate per sensitive group in the training split, "
                      "missing values, small classes"),
          (_METRICS, "per-group test metrics"), _SHORTCUTS_SHOWS),
         "the data-governance practices: collection and the original purpose of personal "
         "data; availability, quantity and suitability; representativeness for the intended "
         "purpose; bias examination beyond the configured sensitive columns; the legal basis "
         "for processing special categories of personal data (Art. 10(5))"),
    Item(ARTICLES, "Art. 12", "Record-keeping: automatic logging of events over the system's "
         "lifetime", (),
         "logging in operation; the bundle records development, not operation. `sslops "
         "predict` writes a record per scoring run (model and input sha256, threshold, counts) "
         "that the provider's logging can keep; the ONNX model logs nothing itself",
         provider_only=True),
    Item(ARTICLES, "Art. 13", "Transparency and instructions for use",
         ((_CARD, "capabilities and limitations, accuracy overall and per group"),
          (_EXPORT, "the input specification")),
         "the instructions for use: provider identity and contact, intended purpose, declared "
         "accuracy levels, human oversight measures, expected lifetime and maintenance, "
         "hardware needed, how to collect the logs"),
    Item(ARTICLES, "Art. 14", "Human oversight",
         ((_CARD, "what an overseer needs to read the outputs: the threshold, per-group error "
                  "rates, calibration and limitations"),),
         "the human oversight measures: who oversees, and how they interpret, disregard, "
         "override or stop the system; sslops builds no such function into the model",
         provider_only=True),
    Item(ARTICLES, "Art. 15", "Accuracy, robustness and cybersecurity",
         ((_METRICS, "accuracy with bootstrap intervals"),
          _OOD_SHOWS,
          (_EXPORT, "agreement of the ONNX and int8 models with the trained one"),
          ("manifest.json", "the bundle's integrity"),
          ("sbom.cdx.json", "the software components")),
         "the accuracy levels declared in the instructions for use; resilience to errors and "
         "faults in operation; protection against data or model poisoning and adversarial "
         "examples"),
    Item(NIST, "MEASURE 1.1", "Approaches and metrics for the most significant risks are "
         "selected; risks not measured are documented",
         (("config.json", "the metrics configured"), ("gates.json", "the limits enforced"),
          (_CARD, "the limitations")),
         "which mapped risks these metrics measure and which are not measured"),
    Item(NIST, "MEASURE 1.3", "Internal experts not involved in development, or independent "
         "assessors, review the measurements",
         (("manifest.json", "lets a reviewer check the files are the ones measured"),
          _SIGNATURE_SHOWS),
         "the review itself (a registry approval, `sslops audit approve`, records one; it is "
         "not in the bundle)", provider_only=True),
    Item(NIST, "MEASURE 2.1", "Test sets, metrics and tools are documented",
         ((_METRICS, "the metrics"), (_DATACARD, "the test split"),
          ("environment.json", "every tool version")), ""),
    Item(NIST, "MEASURE 2.3", "Performance is measured in conditions like deployment",
         ((_EXPORT, "the ONNX and int8 models' agreement with the trained model on test "
                    "rows"),),
         "a shadow test on live traffic (`sslops shadow`; its report is not in the bundle)"),
    Item(NIST, "MEASURE 2.5", "Validity and reliability are demonstrated; limits of "
         "generalisation are documented",
         ((_METRICS, "test metrics with intervals"), _OOD_SHOWS,
          (_CARD, "the limitations")),
         "validity for the population the system is deployed on"),
    Item(NIST, "MEASURE 2.7", "Security and resilience are evaluated",
         (_SIGNATURE_SHOWS, ("sbom.cdx.json", "the software components")),
         "penetration and adversarial testing"),
    Item(NIST, "MEASURE 2.8", "Transparency and accountability risks are examined",
         ((_CARD, "the owner and the intended use"), ("lineage.json", "the lineage"),
          ("gates.json", "the gate decisions and who accepted any override")),
         "the examination of transparency and accountability risks"),
    Item(NIST, "MEASURE 2.9", "The model is explained, validated and documented; outputs are "
         "interpreted in context",
         ((_CARD, "the documentation"), (_METRICS, "the validation metrics")),
         "an explanation of the model's outputs (sslops computes no feature attributions) and "
         "their interpretation in context"),
    Item(NIST, "MEASURE 2.10", "Privacy risk is examined",
         ((_DATACARD, "identifier-like and free-text columns dropped, personal data found "
                      "and redacted"),),
         "a privacy impact assessment"),
    Item(NIST, "MEASURE 2.11", "Fairness and bias are evaluated and documented",
         ((_METRICS, "per-group metrics and DP/EO gaps with intervals, for the configured "
                     "sensitive columns"),
          _SHORTCUTS_SHOWS, (_FINETUNE, "the fairness policy and its candidates"),
          ("gates.json", "the fairness gates")), ""),
    Item(NIST, "MEASURE 2.12", "Environmental impact is assessed",
         (("lineage.json", "stage times only"),), "energy and emissions figures"),
    Item(NIST, "MEASURE 2.13", "Effectiveness of the measurement is evaluated",
         (("changelog.json", "metric changes between successive bundles"),),
         "the evaluation of whether these metrics and tests work", provider_only=True),
    Item(NIST, "MEASURE 3.1", "Risks are tracked over time",
         (("changelog.json", "metric changes between bundles"),
          ("gates.json", "the gate results")), "monitoring in production"),
    Item(NIST, "MEASURE 4.2", "Results are checked with domain experts and relevant AI actors",
         (), "expert review", provider_only=True),
)  # fmt: skip


def compliance_map(bundle_files: set[str]) -> list[dict[str, Any]]:
    """Each requirement with the bundle files that evidence it, what is absent and what the
    provider owes: ``evidenced`` only when every file is present and nothing is left to the
    provider; ``provider`` whatever the bundle holds for an item only the provider can write."""
    rows = []
    for item in ITEMS:
        present = {p: s for p, s in item.evidence if any(fnmatch(n, p) for n in bundle_files)}
        absent = [p for p, _ in item.evidence if p not in present]
        if item.provider_only:
            coverage = "provider"
        elif item.evidence and not present:
            coverage = "missing"
        elif not absent and not item.provider:
            coverage = "evidenced"
        else:
            coverage = "partial"
        rows.append({
            "framework": item.framework, "id": item.ident, "requirement": item.requirement,
            "coverage": coverage,
            "evidence": list(present),
            "evidence_files": sorted(n for n in bundle_files
                                     if any(fnmatch(n, p) for p in present)),
            "evidence_shows": present,
            "absent": {p: ABSENT_WHY.get(p, "not written") for p in absent},
            "provider_supplies": item.provider,
        })  # fmt: skip
    return rows
