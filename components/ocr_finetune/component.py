"""KFP component: fine-tune a TrOCR checkpoint on prepared lines (and synthetic ones)."""

from typing import NamedTuple

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def finetune(base_model: dsl.Input[dsl.Model], lines: dsl.Input[dsl.Dataset], checkpoints: str, config: dict,
             run_id: str, trained: dsl.Output[dsl.Model],
             metrics: dsl.Output[dsl.Metrics]) -> NamedTuple("Trained", [("model", str), ("key", str)]):
    """Fine-tune the model `base_model` points to; `trained` is itself a checkpoint (returned: its URI and fingerprint).

    Checkpoints go to `checkpoints`, or by default under the run's root on the store, so that a
    retried or preempted pod of this run resumes where the last one stopped.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.lifecycle import resumable, run_checkpoints
    from inkbooth.models import fingerprint
    from inkbooth.ocr.finetune import FinetuneConfig, finetune_trocr

    manifest = finetune_trocr(lineage.target(base_model), trained.path,
                              cfg.from_dict(FinetuneConfig, resumable(config), source="finetune config"),
                              data=lines.path, checkpoints=checkpoints or run_checkpoints(trained.uri, run_id))
    for key, value in manifest.metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    return (trained.uri, fingerprint(trained.path))
