"""Face datasets: ingest (LFW, CelebA, CSV manifest), synthetic faces, the Parquet format,
and memory-mapped loading per split and worker rank."""

from san_search.data.prepare import BuildOptions, prepare, summary_table
from san_search.data.splits import SPLITS, Pairs
from san_search.data.store import PreparedDataset, SplitView, open_dataset
from san_search.data.synth import synth, synth_files

__all__ = [
    "SPLITS",
    "BuildOptions",
    "Pairs",
    "PreparedDataset",
    "SplitView",
    "open_dataset",
    "prepare",
    "summary_table",
    "synth",
    "synth_files",
]
