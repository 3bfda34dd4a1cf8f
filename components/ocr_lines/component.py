"""KFP component: check and split labelled line crops into a prepared line set."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def prepare_lines(data: dsl.Input[dsl.Dataset], config: dict, lines: dsl.Output[dsl.Dataset]):
    """Snapshot `data` (images + labels.jsonl/tsv) into `lines` (also the export's parity set)."""
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.lines import LinesConfig
    from inkbooth.ocr.lines import prepare_lines as stage

    manifest = stage(lineage.location(data), lines.path, cfg.from_dict(LinesConfig, config, source="lines config"),
                     source=data.uri)
    lines.metadata.update({"data_hash": manifest.inputs["data"], **manifest.metrics})
