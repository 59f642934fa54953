"""Media I/O through ffmpeg: probe, stream frames in and out, cut and convert audio. (A sample's members as bytes
and back, in-process: posetalk_data.members.)

Frames stream through a pipe from ffmpeg (decoding) and into PyAV's encoder, so memory stays bounded by one frame,
whatever the clip length.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

# ffmpeg / ffprobe are stopped after this long (seconds): a damaged input must not keep a command busy for ever.
# Generous: decoding an hour of audio or muxing an hour of video takes well under a minute.
FFMPEG_TIMEOUT = 600
FFPROBE_TIMEOUT = 60


class MediaError(Exception):
    """A media file that ffmpeg cannot read or write; the message is meant for people."""


def require_ffmpeg() -> None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH. Install FFmpeg (Debian/Ubuntu: apt-get install ffmpeg; "
            "conda: conda install -c conda-forge ffmpeg) and try again."
        )


def ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout
    return out.split("\n", 1)[0].replace("ffmpeg version ", "").split(" Copyright")[0]


def safe_path(path: str | Path) -> str:
    # A name beginning with '-' would be read by ffmpeg as an option; an absolute path never is.
    return str(Path(path).absolute())


@dataclass(frozen=True)
class ProbeInfo:
    duration: float
    width: int                 # as displayed, rotation applied
    height: int
    fps: float
    rotation: int              # degrees from the display matrix / rotate tag
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    audio_rate: int | None
    frames: int | None         # container's frame count where known
    video_duration: float | None = None   # the video stream's own duration (the container's may include audio)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _rotation(stream: dict) -> int:
    tags = stream.get("tags", {})
    if "rotate" in tags:
        return int(float(tags["rotate"])) % 360
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(-float(side["rotation"])) % 360
    return 0


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def _ffprobe(path: str | Path) -> dict:
    import json

    args = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", safe_path(path)]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=FFPROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffprobe did not finish within {FFPROBE_TIMEOUT} s (a damaged file?)") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no detail"]
        raise MediaError(f"ffprobe cannot read it ({detail[0]})")
    return json.loads(proc.stdout)


def has_audio(path: str | Path) -> bool:
    """Whether the file has an audio stream: asked in-process (PyAV opens a file for 1-6 ms of CPU; an ffprobe
    process costs 80-100 ms), ffprobe only where PyAV cannot open it (ffprobe's message names the problem)."""
    import av

    try:
        with av.open(safe_path(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError:
        return any(s.get("codec_type") == "audio" for s in _ffprobe(path).get("streams", []))


def probe(path: str | Path) -> ProbeInfo:
    """ffprobe a file; MediaError with a readable reason when it is not a playable video.
    ffprobe, not PyAV (1-12 ms in-process against 80-100 ms a process): PyAV bundles a newer FFmpeg (8.1) whose
    container durations differ from those of the system ffmpeg that decodes the frames (GRID .mpg 2.98 against 3.0 s,
    most sample .mp4 files by 1-24 ms), so spans, frame counts and a build's bytes would move."""
    info = _ffprobe(path)
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise MediaError("no video stream")
    duration = float(info.get("format", {}).get("duration") or video.get("duration") or 0.0)
    rotation = _rotation(video)
    w, h = int(video.get("width", 0)), int(video.get("height", 0))
    if rotation in (90, 270):
        w, h = h, w
    frames = video.get("nb_frames")
    return ProbeInfo(
        duration=duration, width=w, height=h,
        fps=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        rotation=rotation, has_audio=audio is not None, video_codec=video.get("codec_name", "?"),
        audio_codec=audio.get("codec_name") if audio else None,
        audio_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        frames=int(frames) if frames and frames.isdigit() else None,
        video_duration=float(video["duration"]) if video.get("duration") else None,
    )


def read_frames(path: str | Path, *, fps: float, start: float = 0.0, duration: float | None = None,
                size: tuple[int, int] | None = None, probed: tuple[int, int] | None = None,
                threads: int = 0, audio: tuple[Path, int] | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames at a constant `fps` (ffmpeg's fps filter), rotation applied, optionally resized.

    `size` is (width, height) of the frames as displayed; ffmpeg autorotates before the filters run, and scales in
    the same process as it decodes (area averaging), so a small copy of a large video never crosses the pipe at full
    size. `probed`: the video's own (width, height) as displayed, when the caller has probed it already (saves an
    ffprobe). `threads`: the decoder's threads (0: ffmpeg's choice, one per core and one more). `audio`: (wav, rate):
    the same ffmpeg also writes the span's audio as extract_audio does (one process a video, not two); the file
    appears once every frame is read and ffmpeg ended well, and not at all otherwise.
    """
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-threads", str(threads), "-ss", f"{start:.6f}"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    vf = f"fps={fps}"
    if size is not None:
        # scaled as 4:2:0 planes, then converted: swscale's one-step scale into RGB costs 3 ms more a 1080p frame
        vf += f",scale={size[0]}:{size[1]}:flags=area,format=yuv420p"
        width, height = size
    elif probed is not None:
        width, height = probed
    else:
        info = probe(path)
        width, height = info.width, info.height
    args += ["-i", safe_path(path), "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    partial = None
    if audio is not None:
        partial = audio[0].with_name(f".{audio[0].name}.partial.wav")
        args += ["-y", *audio_output(partial, audio[1], duration)]
    frame_bytes = width * height * 3
    # stderr goes to a file: a pipe read only at the end fills up (64 KiB) on a damaged stream and ffmpeg then
    # blocks writing it while we block reading frames
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
    finished = False
    try:
        while True:
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                finished = True
                break
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        if not finished:        # the caller stopped early: stop ffmpeg, it is not an error
            proc.kill()
        proc.stdout.close()
        code = proc.wait()
        log.seek(0)
        err = log.read().decode(errors="replace").strip()
        log.close()
        if partial is not None:
            if finished and code == 0:
                partial.replace(audio[0])
            else:
                partial.unlink(missing_ok=True)
        if code != 0 and finished and err:
            raise MediaError(f"decoding failed: {err.splitlines()[-1]}")


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p, x264 on one thread: the same bytes every run) at a constant frame rate,
    no audio, the index first (faststart). In-process through PyAV: no pipe, and OpenCV's RGB -> YUV conversion,
    which costs a third of ffmpeg's here."""

    def __init__(self, path: str | Path, *, width: int, height: int, fps: float, crf: int = 18,
                 preset: str = "veryfast", keyframe_every: int = 250):
        import av

        if width % 2 or height % 2:
            raise MediaError(f"H.264 (yuv420p) needs an even frame size, not {width}x{height}")
        self.path, self.frames, self.size = Path(path), 0, (height, width)
        try:
            self._out = av.open(safe_path(self.path), "w", format="mp4", options={"movflags": "+faststart"})
        except av.error.FFmpegError as err:
            raise MediaError(f"encoding failed: {err}") from None
        self._out.flags |= av.container.Flags.bitexact.value      # no muxer version or time in the file
        self._stream = self._out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.codec_context.gop_size = keyframe_every
        self._stream.codec_context.thread_count = 1
        self._stream.options = {"preset": preset, "crf": str(crf)}

    def write(self, frame: np.ndarray) -> None:
        import av
        import cv2

        if frame.shape[:2] != self.size:
            raise MediaError(f"frame of {frame.shape[1]}x{frame.shape[0]} for a {self.size[1]}x{self.size[0]} video")
        yuv = cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2YUV_I420)
        picture = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        picture.pts = self.frames
        self._out.mux(self._stream.encode(picture))
        self.frames += 1

    def close(self) -> None:
        import av

        try:
            self._out.mux(self._stream.encode())
            self._out.close()
        except av.error.FFmpegError as err:
            raise MediaError(f"encoding failed: {err}") from None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(args: list[str], what: str, timeout: float = FFMPEG_TIMEOUT) -> bytes:
    try:
        proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:      # subprocess.run has killed ffmpeg
        raise MediaError(f"{what} did not finish within {timeout:g} s (a damaged input?)") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no detail"]
        raise MediaError(f"{what} failed: {tail[0]}")
    return proc.stdout


def extract_audio(path: str | Path, out_wav: str | Path, *, rate: int, start: float = 0.0,
                  duration: float | None = None) -> None:
    """Decode the first audio stream to mono s16 PCM at `rate`, padded with silence to `duration`."""
    args = ["-ss", f"{start:.6f}"]
    if duration is not None:
        args += ["-t", f"{duration:.6f}"]
    _run([*args, "-i", safe_path(path), *audio_output(out_wav, rate, duration)], "audio extraction")


def audio_output(out_wav: str | Path, rate: int, duration: float | None) -> list[str]:
    """ffmpeg's output options for the first audio stream as mono s16 PCM at `rate`, padded with silence to
    `duration`: extract_audio's, and read_frames' second output."""
    args = ["-map", "0:a:0", "-ac", "1", "-ar", str(rate)]
    if duration is not None:
        args += ["-af", "apad", "-t", f"{duration:.6f}"]
    return [*args, "-c:a", "pcm_s16le", safe_path(out_wav)]


def mux_audio(video: str | Path, audio: str | Path, out: str | Path, *, seconds: float) -> None:
    """`video`'s stream copied, with `audio` added as AAC, padded with silence or cut to `seconds`."""
    _run(["-i", safe_path(video), "-i", safe_path(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
          "-af", "apad", "-c:a", "aac", "-b:a", "128k", "-t", f"{seconds:.6f}", "-movflags", "+faststart",
          safe_path(out)], "muxing the audio")


def audio_moved_copy(video: str | Path, out: str | Path, frames: int, *, audio: str | Path | None = None,
                     fps: int = 25) -> None:
    """A copy of `video` whose video stream is copied untouched and whose audio (its own, or `audio`'s) is moved
    `frames` later (silence in front) or earlier (negative: cut in front), re-encoded as PCM; `out` should be .mkv.
    For checking the audio-video offset measure (tests/test_sync.py, bench/sync.py) on known offsets."""
    ms = abs(frames) * 1000 // fps
    moved = f"adelay={ms}:all=1" if frames > 0 else f"atrim=start={ms / 1000},asetpts=PTS-STARTPTS"
    inputs = ["-i", safe_path(video)] + (["-i", safe_path(audio)] if audio else [])
    _run([*inputs, "-map", "0:v:0", "-c:v", "copy", "-map", f"{1 if audio else 0}:a:0", "-af", moved,
          "-c:a", "pcm_s16le", safe_path(out)], "moving the audio")


def nonfinite_samples(path: str | Path) -> int:
    """How many samples of the first audio stream are NaN or infinite. Only float PCM (a float WAV) can hold them
    (decoders of compressed audio never produce them), so only that is decoded: as stored, no resampling or mixing
    that would spread or hide them."""
    streams = [s for s in _ffprobe(path).get("streams", []) if s.get("codec_type") == "audio"]
    if not streams or not streams[0].get("codec_name", "").startswith("pcm_f"):
        return 0
    raw = _run(["-i", safe_path(path), "-map", "0:a:0", "-f", "f32le", "-"], "audio read")
    return int((~np.isfinite(np.frombuffer(raw, "<f4"))).sum())


def read_wav(path: str | Path) -> np.ndarray:
    """An audio file -> float32 mono samples in -1..1 at its own rate: the mono 16-bit WAV that extract_audio
    writes is read directly; anything else (FLAC, other WAVs) through ffmpeg."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() == 1 and wav.getsampwidth() == 2:
                return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768.0
    except (wave.Error, EOFError):
        pass
    raw = _run(["-i", safe_path(path), "-f", "s16le", "-ac", "1", "-"], "audio read")
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
