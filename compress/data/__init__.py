"""Data: the embedded scenes dataset, image transforms and the CSV / webdataset readers."""
