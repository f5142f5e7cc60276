"""What each output column means: the descriptions the UI shows in every asset's column schema.

One dictionary for the whole graph (a column keeps its meaning wherever it appears); ranking metrics are
described from :data:`recsys_assets.stages.ranking_metrics.LEGEND`. ``test_determinism`` fails when an asset
writes a column that has no description here.
"""

import re

from ..stages.ranking_metrics import LEGEND

COLUMNS: dict[str, str] = {
    # interactions
    "client_id": "The app client (user) id.",
    "item_id": "The video id (the catalog's video_id).",
    "session_id": "The client's session; negatives pair only within one session.",
    "event_ts": "When the item was served (UTC).",
    "timespent_s": "Seconds the client spent on the item.",
    "pcc": "Play completion: the fraction of the video played (0..1, may exceed 1 on replays).",
    "liked": "Whether the client liked the item.",
    "is_positive": "Phase 1 class: true = positive (completion > 90% or liked), false = negative.",
    "session_all_positive": "Every served item of the session was watched or liked (the session cannot witness).",
    "quarantine_reason": "Why the snapshot row was set aside (null id, NaN or negative duration, ...).",
    # catalog and items
    "language": "The video's language (the catalog's); models are trained per language.",
    "creator_id": "The uploader's id.",
    "download_url": "Where the video's media is fetched from (validated against the media allowlist).",
    "duration_s": "The video's duration in seconds.",
    "upload_date": "The day the video was uploaded.",
    "width": "Video width in pixels.",
    "height": "Video height in pixels.",
    "num_interactions": "Interactions with the item on the day.",
    "num_positive": "Positive interactions with the item on the day.",
    "num_clients": "Distinct clients behind the row (an item's, or a pair's witnesses).",
    # pairs
    "item_id_1": "The pair's first item (the smaller id).",
    "item_id_2": "The pair's second item.",
    "download_url_1": "The first item's download_url.",
    "download_url_2": "The second item's download_url.",
    "pair_type": "positive (same client) or negative (same client and session).",
    "anchor": "The item the pair was drawn for.",
    "similarity": "Cosine similarity of the two items' fused content embeddings.",
    "bucket": "The similarity's bucket (BLIP buckets, by quantile edges).",
    "witness_client_id": "The client whose behaviour makes the pair.",
    "unscored_reason": "Why the pair has no similarity (an item without an embedding).",
    # content embeddings
    "status": "ok, no_audio or failed: how the item's media went through fetch and decode.",
    "reason": "Why the item is not ok (fetch, decode or model failure; or why it has no vector).",
    "detail": "The error message behind the reason.",
    "distinct_frames": "Frames decoded that differ from each other.",
    "audio_seconds": "Seconds of audio decoded (0 without an audio track).",
    "source_bytes": "Bytes of media fetched.",
    "keyframes_only": "Whether frames were taken from keyframes only (faster decode).",
    "frame_embeddings": "The open_clip image embedding of each sampled frame.",
    "blip_embedding": "The frames' embeddings pooled (mean, L2-normalised): the 'BLIP embedding'.",
    "audio_embedding": "The Whisper encoder's embedding of the audio, pooled.",
    "fused_embedding": "Image and audio embeddings fused (concatenated, normalised).",
    # collaborative vectors
    "vector": "The ALS latent vector (item or client factors).",
    "als_vector": "The item's ALS vector, when ALS trained it.",
    "predicted_vector": "The vector the content encoder of the same day predicts from the item's content.",
    "predicted_scale": "The factor the language's predictions were rescaled by (to the ALS vectors' mean norm).",
    "is_predicted": "Whether the serving vector is the predicted one (no ALS vector).",
    "source": "Where the serving vector comes from: als, predicted or none.",
    "encoder_split": "The item's split as stored with the encoder: train, validation, or unseen (never seen by it).",
    "new_upload": "Whether the video was uploaded on the partition's day.",
    "interactions_on_day": "Snapshot rows of the item on the day, quarantined ones included (0: never played).",
    "watched_on_day": "Whether the item was watched that day (in item_meta); false for an active upload nobody played.",
    # two-tower dataset
    "label": "The training label: the client played the item (seed 001's event set).",
    "weight": "The row's weight in the loss.",
    "item_features": "The item's PCA-reduced content features.",
    "pos_hist": "Mean features of the client's positive window events before the history day (point in time).",
    "neg_hist": "Mean features of the client's negative window events before the history day (point in time).",
    "history_row": "The row of two_tower_user_history holding this client's history as of this row's day.",
    "item_row": "The row of two_tower_item_features holding this item's features.",
    "history_day": "The day whose start the history is taken at: only the client's events before it count.",
    "n_pos_hist": "Items in the client's positive history.",
    "n_neg_hist": "Items in the client's negative history.",
    # evaluations
    "method": "The ranking method (model, or a baseline: popularity, random, oracle).",
    "variant": "The vectors ranked: true ALS, predicted, random; cold_*: items unseen by the encoder; new_*: the "
    "previous day's never-played uploads among the whole catalog (predicted, random, oracle, true ALS of the day).",
    "clients": "Clients evaluated.",
    "candidates": "Items ranked per client.",
    "targets": "Relevant items (the day's positives) across clients.",
    "rows": "Validation rows scored.",
    "clients_without_positive": "Clients with no positive on the validation day (left out of ranking metrics).",
    "catalog_clients": "Clients in the catalog-wide ranking.",
    "experiment_id": "A stable id of the experiment: its days, method and config.",
    "event_type": "The seed's event set of the label.",
    "train_data": "The model's training window.",
    "val_data": "The validation day.",
    "model_partition": "The partition of the model evaluated.",
    "dataset_partition": "The partition of the training dataset.",
    "pca_partition": "The partition of the item PCA.",
    "model_config": "The model's hyper-parameters (JSON).",
    "embedding_fingerprint": "The content models' fingerprint the features were computed with.",
    "random_weights": "Whether the content models ran with random weights (no checkpoint configured).",
}

_METRIC = re.compile(r"^(catalog_recall|recall|ndcg|avg_prec)@(\d+|gt_\d+|all_pos)$")


def describe(column: str) -> str:
    """The column's description, or '' when it has none."""
    if column in COLUMNS:
        return COLUMNS[column]
    if column in LEGEND:
        return LEGEND[column]
    m = _METRIC.match(column)
    if m:
        name, k = m.groups()
        if k == "all_pos":
            return LEGEND["recall@all_pos"]
        if k.startswith("gt_"):
            template, k = LEGEND["recall@gt_k"], k[3:]
        else:
            template = LEGEND.get(f"{name}@k") or LEGEND.get(f"{name}@10", "").replace("10", "k")
        return re.sub(r"\bk\b", k, template)
    return ""
