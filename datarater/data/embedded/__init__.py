"""The embedded noisy corpus: text every installation carries, with seeded, labelled corruptions.

- `harvest`: docstring prose and code of the standard library and installed dependencies (read
  with `ast`, nothing imported), from the files `pyfiles` finds, cut into chunks by `chunking`;
- `corrupt`: the corruption types (`CORRUPTIONS`) and `corrupt_documents`;
- `naming`: config names (``datarater_embedded/seed0_corrupt30_docs4000``) and the data dir;
- `builder`: the TFDS builder and `build_embedded` (imports TFDS; the other modules do not).
"""
