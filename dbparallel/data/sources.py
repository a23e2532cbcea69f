"""Built-in data sets that exist offline, and the user's own Parquet data or text."""

from __future__ import annotations

import pyarrow as pa

from dbparallel.config import DataConfig
from dbparallel.data.tables import image_table, read_table
from dbparallel.errors import DataError


def digits_table() -> pa.Table:
    """scikit-learn's 1,797 8x8 handwritten digits (shipped inside scikit-learn), in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.reshape(-1, 1, 8, 8) / 16.0
    return image_table(images, digits.target)


def load_table(data: DataConfig) -> pa.Table:
    """The training table named by ``data``."""
    if data.source == "digits":
        if (data.image_size, data.channels, data.num_classes) != (8, 1, 10):
            raise DataError("data.image_size/channels/num_classes: digits are 8x8, 1 channel, "
                            "10 classes")
        return digits_table()
    if data.source == "parquet":
        table = read_table(data.path)
        if "text" in table.column_names:
            from dbparallel.data.text import as_sequence_table

            return as_sequence_table(table, data.seq_len)
        return table
    if data.source == "fashion_mnist":
        from dbparallel.data.fashion import fashion_table

        if (data.image_size, data.channels, data.num_classes) != (28, 1, 10):
            raise DataError("data.image_size/channels/num_classes: Fashion-MNIST is 28x28, "
                            "1 channel, 10 classes")
        return fashion_table(data.path)
    if data.source in ("shakespeare", "text"):
        from dbparallel.data.text import shakespeare_table, text_file_table

        if data.source == "shakespeare":
            return shakespeare_table(data.seq_len)
        return text_file_table(data.path, data.seq_len)
    raise DataError(f"data.source: unknown data set {data.source!r}")
