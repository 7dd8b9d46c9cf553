"""Dataset generation: from an official dataset release to the npz files ``main.py`` reads.

Modules (docs/method.md §2 and §10 describe what they do to the audio and the file format):

- :mod:`datagen.registry` — the datasets (classes, folds, generator);
- :mod:`datagen.audio` — reading one audio file (libsndfile) and converting it to an int16 clip
  at a network's rate (polyphase resampling, mono, silence trimming);
- :mod:`datagen.convert` — parallel, restartable conversion of many clips through a per-clip
  cache, with bad files reported before anything is written;
- :mod:`datagen.npzio` — the pickle-free npz format: save and load;
- :mod:`datagen.pipeline` — the one generation pipeline and command line that every entry point
  (``esc_gen.py``, ``urbansound_gen.py``) calls.
"""
