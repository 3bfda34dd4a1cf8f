"""The OCR stage under the path compiled pipelines import; the recogniser lives in
``inkbooth.ocr.recognition.recognizer``, the shard in ``inkbooth.ocr.batch.shard``."""

from inkbooth.ocr.batch.shard import recognize_documents as recognize_documents
from inkbooth.ocr.recognition.recognizer import RecognizeConfig as RecognizeConfig
from inkbooth.ocr.recognition.recognizer import Recognizer as Recognizer
