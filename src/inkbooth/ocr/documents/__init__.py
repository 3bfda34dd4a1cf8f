"""What OCR reads: documents into pages (``pages``), labelled line images (``labels``), and synthetic
documents with exact ground truth (``synthetic``). Imports nothing of ``inkbooth.ocr``."""
