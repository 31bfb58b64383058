"""The Whisper core shared by faster-whisper, torch-whisper and onnx-whisper.

Modules (none imports torch, onnxruntime or CTranslate2 at import time):

* ``features``   - the log-mel filterbank and features (numpy, or torch on the device);
* ``tokens``     - the language table, tokenizer, special tokens, prompts, suppression lists;
* ``timestamps`` - timestamp sampling rules, cutting windows into segments, clamping to the audio;
* ``segments``   - fallback and silence checks, the long-form loop, building ``Segment``s;
* ``alignment``  - word timestamps from cross-attention (DTW over the alignment heads);
* ``validate``   - the argument and option checks every Whisper engine makes.
"""
