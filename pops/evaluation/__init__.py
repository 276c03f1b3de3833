"""Evaluation against ground truth (one room): the metrics on embeddings (`metrics`), the results table (`table`),
the harness that samples operators on test pairs and chooses their sampling on validation classes (`harness`) by a
rule that keeps the default unless a candidate beats it beyond the noise (`choice`), the peers a user might pick
instead (`peers`: ridge regression; the training-free subspace operator is pops.operators.subspace), the evaluation
data a demo writes and `pops eval` reads (`testsets`), the errors broken down by factor (`factors`); and,
on the real models, the paper's instruct evaluation of Table 1 in one call (`protocol.run_protocol`, imported on use).
"""

from pops.evaluation.harness import (
    Choice,
    candidate_samplings,
    choose_sampling,
    evaluate_operators,
    image_inputs,
    row_kind,
    row_name,
    sample_pairs,
    test_top1,
    validation_hits,
)
from pops.evaluation.metrics import (
    averaging_baseline,
    class_prototypes,
    cosine_to_target,
    evaluate_embeddings,
    input_a_baseline,
    mean_reciprocal_rank,
    nearest_classes,
    oracle_baseline,
    top1_accuracy,
)
from pops.evaluation.table import METHOD_ORDER, MetricRow, MetricsTable
from pops.evaluation.testsets import OperatorData, load_test_data, save_data

__all__ = [
    "Choice",
    "METHOD_ORDER",
    "MetricRow",
    "MetricsTable",
    "OperatorData",
    "averaging_baseline",
    "candidate_samplings",
    "choose_sampling",
    "class_prototypes",
    "cosine_to_target",
    "evaluate_embeddings",
    "evaluate_operators",
    "image_inputs",
    "input_a_baseline",
    "load_test_data",
    "mean_reciprocal_rank",
    "nearest_classes",
    "oracle_baseline",
    "row_kind",
    "row_name",
    "sample_pairs",
    "test_top1",
    "validation_hits",
    "save_data",
    "top1_accuracy",
]
