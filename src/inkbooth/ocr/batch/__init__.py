"""Batch OCR: documents into results, sharded and resumable.

``plan`` lists the documents once, so every shard of a run works from the same snapshot even if
files arrive meanwhile; ``shard`` reads one shard's documents into per-document ``results``; ``merge``
gathers them into one published artifact. An output belongs to one documents prefix
(``owner.json``); a run over other documents into it is refused. May import ``documents``,
``layout`` and ``recognition``; never ``training``.

The names below are the stages the compiled pipelines import from ``inkbooth.ocr.batch``.
"""

from inkbooth.ocr.batch.merge import KIND as KIND
from inkbooth.ocr.batch.merge import RESULTS as RESULTS
from inkbooth.ocr.batch.merge import merge_results as merge_results
from inkbooth.ocr.batch.plan import plan_documents as plan_documents
from inkbooth.ocr.batch.plan import read_plan as read_plan
from inkbooth.ocr.batch.plan import write_plan as write_plan
from inkbooth.ocr.batch.shard import recognize_documents as recognize_documents
