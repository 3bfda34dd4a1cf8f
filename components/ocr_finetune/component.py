"""KFP component: fine-tune a TrOCR checkpoint on prepared lines (and synthetic ones)."""

from typing import NamedTuple

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("train-cuda"), install_kfp_package=False)
def finetune(base_model: dsl.Input[dsl.Model], lines: dsl.Input[dsl.Dataset], checkpoints: str, config: dict,
             run_id: str, trained: dsl.Output[dsl.Model],
             metrics: dsl.Output[dsl.Metrics]) -> NamedTuple("Trained", [("key", str)]):
    """Fine-tune the model `base_model` points to; `trained` is itself a checkpoint (its fingerprint returned).

    The fingerprint is the export's cache key (an artifact is keyed by its name, not its content).

    Checkpoints go to `checkpoints`, or by default under the run's root on the store, so that a
    retried or preempted pod of this run resumes where the last one stopped.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.lifecycle import own_checkpoints, resumable, run_checkpoints
    from inkbooth.models import fingerprint
    from inkbooth.ocr.finetune import FinetuneConfig, finetune_trocr
    from inkbooth.reports import metrics as stage_metrics

    own_checkpoints(run_id)
    manifest = finetune_trocr(lineage.target(base_model), trained.path,
                              cfg.from_dict(FinetuneConfig, resumable(config), source="finetune config"),
                              data=lines.path, checkpoints=checkpoints or run_checkpoints(trained.uri, run_id))
    stage_metrics.log(metrics, stage_metrics.finetune_metrics(manifest.metrics))
    return (fingerprint(trained.path),)
