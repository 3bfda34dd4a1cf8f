"""Line images into text, confidences and token boxes, and the ONNX export that recognition runs.

``exported`` (an export's files and sessions), ``text`` (error rates), ``graphs`` (the decoder
modules exported to ONNX), ``decoding`` (the ONNX Runtime engine and its searches), ``export`` (the
export stage and its parity gate), ``recognizer`` (the recogniser), ``chunks`` (long lines read in
overlapping chunks and stitched), ``leaders`` (dot leaders counted in the image), ``localize`` (token
boxes). May import ``inkbooth.ocr.documents``; never ``layout``, ``training`` or ``batch``.
"""

from inkbooth import quiet

# Every stage that recognises or exports loads transformers (and optimum): its messages that are not
# the user's to fix go first.
quiet.library_notes()
