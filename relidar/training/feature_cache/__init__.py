"""The teacher feature cache: the teacher runs once per frame, distillation reads only this.

Layout of a cache folder::

    manifest.json            teacher, feature dim, storage mode, dataset, class names, frame ids and files, settings
    projection.npz           the fixed linear projection (PCA basis) when the storage mode projects
    frames/000000.npz ...    one file per dataset frame (index order), written atomically
    reports/rank-R.json      what each rank's last run computed, skipped and why frames failed

A frame file holds the points [N,4] float32, labels [N] int32 (if the dataset has them), the
point-pixel pairs (``pair_point`` int32, ``pair_camera`` uint8, ``pair_uv`` float32 pixels), per-point
superpixel ids [N] int32 (-1 unpaired, unique per frame), the teacher features as the storage mode
keeps them (below), and a sha256 over all of it. A file is complete iff it loads and its checksum
verifies: writes go to a ``.partial`` temp file renamed into place, so an interrupted run leaves
either the old state or a complete file, and a re-run skips exactly the frames that verify.

Storage modes (:class:`CacheStorage`, part of the cache's identity), measured in the README:

* ``layout: pairs`` keeps one feature row per pair (``pair_features``); ``layout: grid`` keeps the
  teacher's patch grid of each camera instead -- only the cells some pair's bilinear stencil reads
  (``grid_cells``, ``grid_features``) -- and pairs are sampled from it when read. A ViT patch covers
  tens to hundreds of points, so the grid is several times smaller, and it decodes to the same
  features as the pairs layout (the stencil is the one :mod:`relidar.training.pairs` samples with).
* ``dtype``: float32, float16, or int8 with one float16 scale per row (``*_scales``: row = q * scale).
* ``projection_dim``: rows are first mapped to fewer dimensions by a fixed orthonormal basis W [D, k]
  (uncentred PCA, fitted on the pairs of a few frames spread over the dataset; ``projection.npz``).
  A linear map without centring keeps dot products meaningful, so text embeddings go through the same
  basis (:meth:`PcaBasis.project_vocabulary`) and zero-shot classification still compares cosines.

Whatever the mode, a reader gets float32 unit rows (:meth:`CachedFrame.teacher_features`).

Ranks share a dataset by index: frame i belongs to rank ``i % world_size``. Ranks never touch each
other's frames; each writes the (identical) manifest atomically. The projection is fitted by
whichever rank gets there first and published with an exclusive link, so every rank encodes with
the same basis (frame files record its sha256; a frame encoded with another basis is recomputed).

Reads verify a frame file's checksum once per process (:class:`CacheReader`): a file whose device,
inode, size and modification time are unchanged since it verified is not hashed again. Frame files
are only ever replaced by a rename, never edited in place, so an unchanged identity means unchanged
bytes; ``verify="always"`` hashes every read.
"""

from relidar.training.feature_cache.basis import PcaBasis, fit_projection, read_projection, write_projection
from relidar.training.feature_cache.codec import decode_rows, encode_rows
from relidar.training.feature_cache.format import (
    CACHE_FORMAT_VERSION,
    FRAMES_DIR,
    MANIFEST_NAME,
    PROJECTION_NAME,
    REPORTS_DIR,
    CacheError,
    CacheManifest,
    CacheSettings,
    CacheStorage,
    frame_file_name,
    load_manifest,
)
from relidar.training.feature_cache.frames import (
    CachedFrame,
    CameraImages,
    StoredFeatures,
    read_cached_frame,
    write_cached_frame,
)
from relidar.training.feature_cache.pairing import compute_cached_frame, encode_grids, pair_frame, teacher_grids
from relidar.training.feature_cache.prepare import PrepareReport, ensure_projection, prepare_cache, rank_frames
from relidar.training.feature_cache.reader import CacheReader

__all__ = [
    "CACHE_FORMAT_VERSION", "FRAMES_DIR", "MANIFEST_NAME", "PROJECTION_NAME", "REPORTS_DIR", "CacheError", "CacheManifest",
    "CacheReader", "CacheSettings", "CacheStorage", "CachedFrame", "CameraImages", "PcaBasis", "PrepareReport",
    "StoredFeatures", "compute_cached_frame", "decode_rows", "encode_grids", "encode_rows", "ensure_projection",
    "fit_projection", "frame_file_name", "load_manifest", "pair_frame", "prepare_cache", "rank_frames",
    "read_cached_frame", "read_projection", "teacher_grids", "write_cached_frame", "write_projection",
]
