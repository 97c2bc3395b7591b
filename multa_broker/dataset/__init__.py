"""Labelled flow datasets: label sources, the corpus builder and the dataset file."""

from multa_broker.dataset.format import FlowDataset, SPLITS

__all__ = ["FlowDataset", "SPLITS"]
