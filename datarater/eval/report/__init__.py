"""The analysis report of a discard-ratio sweep: ``report.md`` with PNG plots, from plain data structures.

Given the runs of a sweep, net compute gains, a table of rater scores with texts (optionally with
corruption labels and baseline curators' scores) and each LM's NLL on the scored rows, the report
shows the sections the DataRater paper shows: results, loss against compute, the best ratio across
model sizes, score distributions per source, the mixture the rater implies, the extreme
sequences, a regression of scores on text features, downstream accuracy, an audit against known
corruption labels and held-out NLL by source and label. A section whose input is missing says so
in one line.

Modules (importers name the one they need):

- `inputs`: the input dataclasses (`RunResult`, `ScoreTable`, `RowNLL`, `ReportInputs`) and their checks;
- `analysis`: the numbers, as pure functions (best ratio, Δ vs the unfiltered baseline, kept fractions, ...);
- `tables`: text formatting, the Markdown results tables (also the sweep's ``results.md``) and ``results.csv``;
- `plots`: the matplotlib figures (PNG);
- `sections`: the Markdown sections of ``report.md``;
- `write`: `write_report`, which assembles ``report.md``.
"""
