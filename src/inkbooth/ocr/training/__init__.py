"""Training a reader: prepared line sets (``lines``), synthetic lines (``synth``), the losses
(``objectives``), held-out scoring (``scoring``), checkpoint state (``state``), fine-tuning
(``finetune``), evaluation of an export (``evaluate``) and registration (``register``). May import
``documents``, ``layout`` and ``recognition``; never ``batch``."""
