"""DataRater: meta-learned curation of language-model pretraining data (JAX).

Importing the package has no side effects: no devices are touched and no files are read.
"""

__version__ = "0.1.0"
