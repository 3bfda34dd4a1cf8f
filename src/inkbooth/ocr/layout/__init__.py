"""Pages into text-line crops: ink and skew (``ink``), the XY-cut (``segment``), the learned detector
(``detect``) and the step that chooses between them (``lines``). May import ``inkbooth.ocr.documents``."""
