from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClassifyTextRequest(_message.Message):
    __slots__ = ("texts", "model", "top_k", "return_logits", "version")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGITS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model: str
    top_k: int
    return_logits: bool
    version: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., top_k: _Optional[int] = ..., return_logits: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class ClassifyImageRequest(_message.Message):
    __slots__ = ("image", "model", "top_k", "return_logits", "version")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGITS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    model: str
    top_k: int
    return_logits: bool
    version: str
    def __init__(self, image: _Optional[bytes] = ..., model: _Optional[str] = ..., top_k: _Optional[int] = ..., return_logits: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("label", "index", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    index: int
    score: float
    def __init__(self, label: _Optional[str] = ..., index: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class ClassificationResult(_message.Message):
    __slots__ = ("predictions", "logits")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    logits: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., logits: _Optional[_Iterable[float]] = ...) -> None: ...

class ClassificationResponse(_message.Message):
    __slots__ = ("model", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    results: _containers.RepeatedCompositeFieldContainer[ClassificationResult]
    def __init__(self, model: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ClassificationResult, _Mapping]]] = ...) -> None: ...

class ByteSpan(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class FillMaskRequest(_message.Message):
    __slots__ = ("text", "mask_spans", "model", "top_k", "truncate", "version")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MASK_SPANS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    text: str
    mask_spans: _containers.RepeatedCompositeFieldContainer[ByteSpan]
    model: str
    top_k: int
    truncate: bool
    version: str
    def __init__(self, text: _Optional[str] = ..., mask_spans: _Optional[_Iterable[_Union[ByteSpan, _Mapping]]] = ..., model: _Optional[str] = ..., top_k: _Optional[int] = ..., truncate: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class BytePrediction(_message.Message):
    __slots__ = ("byte", "char", "score")
    BYTE_FIELD_NUMBER: _ClassVar[int]
    CHAR_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    byte: int
    char: str
    score: float
    def __init__(self, byte: _Optional[int] = ..., char: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class MaskedByte(_message.Message):
    __slots__ = ("position", "original", "predictions")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    position: int
    original: int
    predictions: _containers.RepeatedCompositeFieldContainer[BytePrediction]
    def __init__(self, position: _Optional[int] = ..., original: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[BytePrediction, _Mapping]]] = ...) -> None: ...

class FillMaskResponse(_message.Message):
    __slots__ = ("model", "text", "masked")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    model: str
    text: str
    masked: _containers.RepeatedCompositeFieldContainer[MaskedByte]
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., masked: _Optional[_Iterable[_Union[MaskedByte, _Mapping]]] = ...) -> None: ...

class EstimateFlowRequest(_message.Message):
    __slots__ = ("frame1", "frame2", "model", "version")
    FRAME1_FIELD_NUMBER: _ClassVar[int]
    FRAME2_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    frame1: bytes
    frame2: bytes
    model: str
    version: str
    def __init__(self, frame1: _Optional[bytes] = ..., frame2: _Optional[bytes] = ..., model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EstimateFlowResponse(_message.Message):
    __slots__ = ("model", "height", "width", "flow")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    height: int
    width: int
    flow: bytes
    def __init__(self, model: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., flow: _Optional[bytes] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BatchingConfig(_message.Message):
    __slots__ = ("max_batch_size", "max_delay_ms", "max_queue", "timeout_ms")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_delay_ms: float
    max_queue: int
    timeout_ms: float
    def __init__(self, max_batch_size: _Optional[int] = ..., max_delay_ms: _Optional[float] = ..., max_queue: _Optional[int] = ..., timeout_ms: _Optional[float] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "task", "state", "reason", "device", "dtype", "batching", "options", "architecture", "labels", "load_seconds", "requested_dtype", "compile", "precision_check", "labels_url", "geometry", "requested_device", "device_fallback", "tf32", "version", "versions", "instances", "threads_per_instance", "worker", "worker_pids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_DTYPE_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_CHECK_FIELD_NUMBER: _ClassVar[int]
    LABELS_URL_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    TF32_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKER_PIDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: str
    state: str
    reason: str
    device: str
    dtype: str
    batching: BatchingConfig
    options: _struct_pb2.Struct
    architecture: str
    labels: int
    load_seconds: float
    requested_dtype: str
    compile: bool
    precision_check: PrecisionCheck
    labels_url: str
    geometry: _struct_pb2.Struct
    requested_device: str
    device_fallback: str
    tf32: bool
    version: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionState]
    instances: int
    threads_per_instance: int
    worker: str
    worker_pids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., task: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., batching: _Optional[_Union[BatchingConfig, _Mapping]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., architecture: _Optional[str] = ..., labels: _Optional[int] = ..., load_seconds: _Optional[float] = ..., requested_dtype: _Optional[str] = ..., compile: _Optional[bool] = ..., precision_check: _Optional[_Union[PrecisionCheck, _Mapping]] = ..., labels_url: _Optional[str] = ..., geometry: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., requested_device: _Optional[str] = ..., device_fallback: _Optional[str] = ..., tf32: _Optional[bool] = ..., version: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionState, _Mapping]]] = ..., instances: _Optional[int] = ..., threads_per_instance: _Optional[int] = ..., worker: _Optional[str] = ..., worker_pids: _Optional[_Iterable[int]] = ...) -> None: ...

class VersionState(_message.Message):
    __slots__ = ("version", "state", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: str
    state: str
    reason: str
    def __init__(self, version: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PrecisionCheck(_message.Message):
    __slots__ = ("precision", "argmax_agreement", "rows", "max_abs_diff")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ARGMAX_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    precision: str
    argmax_agreement: float
    rows: int
    max_abs_diff: float
    def __init__(self, precision: _Optional[str] = ..., argmax_agreement: _Optional[float] = ..., rows: _Optional[int] = ..., max_abs_diff: _Optional[float] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "defaults")
    class DefaultsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    defaults: _containers.ScalarMap[str, str]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., defaults: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ReconstructVideoRequest(_message.Message):
    __slots__ = ("config", "media")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    config: StreamConfig
    media: MediaPiece
    def __init__(self, config: _Optional[_Union[StreamConfig, _Mapping]] = ..., media: _Optional[_Union[MediaPiece, _Mapping]] = ...) -> None: ...

class StreamConfig(_message.Message):
    __slots__ = ("model", "chunks_per_window", "return_image", "return_audio", "top_k", "version", "audio")
    class AudioMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        AUDIO_MAY_FOLLOW: _ClassVar[StreamConfig.AudioMode]
        AUDIO_FOLLOWS: _ClassVar[StreamConfig.AudioMode]
        NO_AUDIO: _ClassVar[StreamConfig.AudioMode]
    AUDIO_MAY_FOLLOW: StreamConfig.AudioMode
    AUDIO_FOLLOWS: StreamConfig.AudioMode
    NO_AUDIO: StreamConfig.AudioMode
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_PER_WINDOW_FIELD_NUMBER: _ClassVar[int]
    RETURN_IMAGE_FIELD_NUMBER: _ClassVar[int]
    RETURN_AUDIO_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    model: str
    chunks_per_window: int
    return_image: bool
    return_audio: bool
    top_k: int
    version: str
    audio: StreamConfig.AudioMode
    def __init__(self, model: _Optional[str] = ..., chunks_per_window: _Optional[int] = ..., return_image: _Optional[bool] = ..., return_audio: _Optional[bool] = ..., top_k: _Optional[int] = ..., version: _Optional[str] = ..., audio: _Optional[_Union[StreamConfig.AudioMode, str]] = ...) -> None: ...

class MediaPiece(_message.Message):
    __slots__ = ("frames", "audio")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    audio: Audio
    def __init__(self, frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("encoded", "raw")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    raw: RawFrame
    def __init__(self, encoded: _Optional[bytes] = ..., raw: _Optional[_Union[RawFrame, _Mapping]] = ...) -> None: ...

class RawFrame(_message.Message):
    __slots__ = ("height", "width", "rgb")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    rgb: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., rgb: _Optional[bytes] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("raw", "encoded")
    RAW_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    raw: RawAudio
    encoded: bytes
    def __init__(self, raw: _Optional[_Union[RawAudio, _Mapping]] = ..., encoded: _Optional[bytes] = ...) -> None: ...

class RawAudio(_message.Message):
    __slots__ = ("pcm_f32le", "sample_rate", "channels")
    PCM_F32LE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    pcm_f32le: bytes
    sample_rate: int
    channels: int
    def __init__(self, pcm_f32le: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class ReconstructVideoResponse(_message.Message):
    __slots__ = ("started", "chunk", "labels")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    started: StreamStarted
    chunk: VideoChunk
    labels: WindowLabels
    def __init__(self, started: _Optional[_Union[StreamStarted, _Mapping]] = ..., chunk: _Optional[_Union[VideoChunk, _Mapping]] = ..., labels: _Optional[_Union[WindowLabels, _Mapping]] = ...) -> None: ...

class VideoGrid(_message.Message):
    __slots__ = ("frames", "height", "width")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    frames: int
    height: int
    width: int
    def __init__(self, frames: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class StreamStarted(_message.Message):
    __slots__ = ("model", "grid", "audio_samples_per_window", "sample_rate", "chunks_per_window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLES_PER_WINDOW_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_PER_WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    grid: VideoGrid
    audio_samples_per_window: int
    sample_rate: int
    chunks_per_window: int
    def __init__(self, model: _Optional[str] = ..., grid: _Optional[_Union[VideoGrid, _Mapping]] = ..., audio_samples_per_window: _Optional[int] = ..., sample_rate: _Optional[int] = ..., chunks_per_window: _Optional[int] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("window", "chunk", "padded", "grid", "pixel_start", "pixel_count", "rgb", "audio_start", "audio_count", "audio")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PADDED_FIELD_NUMBER: _ClassVar[int]
    GRID_FIELD_NUMBER: _ClassVar[int]
    PIXEL_START_FIELD_NUMBER: _ClassVar[int]
    PIXEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    AUDIO_START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_COUNT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    window: int
    chunk: int
    padded: bool
    grid: VideoGrid
    pixel_start: int
    pixel_count: int
    rgb: bytes
    audio_start: int
    audio_count: int
    audio: bytes
    def __init__(self, window: _Optional[int] = ..., chunk: _Optional[int] = ..., padded: _Optional[bool] = ..., grid: _Optional[_Union[VideoGrid, _Mapping]] = ..., pixel_start: _Optional[int] = ..., pixel_count: _Optional[int] = ..., rgb: _Optional[bytes] = ..., audio_start: _Optional[int] = ..., audio_count: _Optional[int] = ..., audio: _Optional[bytes] = ...) -> None: ...

class WindowLabels(_message.Message):
    __slots__ = ("window", "predictions", "real_frames", "padded")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PADDED_FIELD_NUMBER: _ClassVar[int]
    window: int
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    real_frames: int
    padded: bool
    def __init__(self, window: _Optional[int] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., real_frames: _Optional[int] = ..., padded: _Optional[bool] = ...) -> None: ...
