"""KFP component: labelled line crops from born-digital PDFs, or the run's labelled lines passed on."""

from kfp import dsl

from inkbooth._image import image


@dsl.component(base_image=image("ocr-cpu"), install_kfp_package=False)
def pdf_lines(data: dsl.Input[dsl.Dataset], data_format: str, extra_lines: str, config: dict,
              lines: dsl.Output[dsl.Dataset]):
    """The labelled lines prepare_lines takes: from the PDFs `data` holds (`data_format` "pdfs", with the
    labelled lines under `extra_lines` when given), or `data` itself (`data_format` "lines"), passed on as a
    pointer so that nothing is copied.
    """
    from inkbooth import config as cfg
    from inkbooth import lineage
    from inkbooth.ocr.training.pdflines import PdfLinesConfig
    from inkbooth.ocr.training.pdflines import pdf_lines as stage

    if data_format == "lines":
        lineage.point(lines, data.uri, role="labelled lines")
        return
    if data_format != "pdfs":
        raise ValueError(f"pdf_lines: data_format must be 'lines' or 'pdfs', got {data_format!r}")
    manifest = stage(lineage.location(data), lines.path, cfg.from_dict(PdfLinesConfig, config, source="pdf_lines config"),
                     extra_lines=extra_lines or None, source=data.uri)
    lines.metadata.update({"pdfs_hash": manifest.inputs["pdfs"], **manifest.metrics})
