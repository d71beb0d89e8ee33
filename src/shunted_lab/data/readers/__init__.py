"""Where a classification dataset's images are stored (data.format): one reader per storage format,
as timm's `data/readers`, behind `create_reader`.

A reader has `classes`, `group_names` (None, or the groups of the val images), `shard_lengths`
(None, or the training shards' lengths for the shard-window shuffle), `split(name, item)` (the
`train` or `val` split as a dataset whose items are `item`'s: pipelines.py), `sample_files()` (some
training images, to size the input) and `report()` (what was skipped, at the end of a stage).
"""

from ...exits import ConfigError

FORMATS = ("folder", "shards")  # data.format


def create_reader(
    format: str,
    root: str,
    skip_bad_images: bool,
    num_classes: int | None,
    groups_file: str | None,
    train_shards,
    val_shards,
    shard_cache: str,
):
    if format == "folder":
        from .folder import FolderReader

        return FolderReader(root, skip_bad_images, num_classes, groups_file)
    if format == "shards":
        if groups_file:
            raise ConfigError("data.groups_file needs data.format=folder (its rows are paths of files)")
        from .shards import ShardReader

        return ShardReader(root, skip_bad_images, num_classes, train_shards, val_shards, shard_cache)
    raise ConfigError(f"data.format={format} is not allowed; expected one of {list(FORMATS)}")
