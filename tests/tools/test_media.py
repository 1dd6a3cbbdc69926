"""Media files are known by their bytes, and every bad one is a typed, one-line error."""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import zipfile
from pathlib import Path
from typing import Literal

import pytest

from agentmm.errors import AgentmmError
from agentmm.tools import media
from agentmm.tools.errors import (
    CorruptMediaError,
    EmptyMediaError,
    ImageTooLargeError,
    MediaError,
    MediaNotFoundError,
    MediaUnreadableError,
    NotAFileError,
    UnsupportedMediaError,
)
from tests.tools.media_files import encode_audio, make_image, png_header, tone, write_wav


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    assert isinstance(error.value, AgentmmError)
    return message


SIGNATURES = {
    "flac": b"fLaC\x00\x00\x00\x22" + b"\x00" * 40,
    "ogg": b"OggS\x00\x02" + b"\x00" * 40,
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x21" + b"\x00" * 40,
    "m4a": b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isom" + b"\x00" * 20,
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 20,
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + b"\x00" * 20,
    "mkv": b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska" + b"\x00" * 20,
}


@pytest.mark.parametrize("name", ["png", "jpeg", "gif", "webp", "bmp"])
def test_images_are_known_by_their_bytes_not_their_name(tmp_path: Path, name: str) -> None:
    real = make_image(tmp_path / f"real.{name}")
    disguised = tmp_path / "disguised.txt"
    disguised.write_bytes(real.read_bytes())
    found = media.sniff(disguised)
    assert (found.name, found.kind) == (name, "image")
    assert found.mime.startswith("image/")


def test_wav_is_known_and_its_header_checked(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "tone.bin")
    assert media.sniff(wav) == media.WAV
    assert media.check_audio(wav) == media.WAV


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_audio_and_video_containers_are_known_by_their_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / "clip.dat"
    path.write_bytes(SIGNATURES[name])
    assert media.sniff_bytes(SIGNATURES[name]).name == name  # type: ignore[union-attr]
    if name in ("mp4", "webm", "mkv"):  # a header alone: whether it holds a film cannot be told
        with pytest.raises(CorruptMediaError):
            media.sniff(path)
    else:
        assert media.sniff(path).name == name


@pytest.mark.parametrize(
    ("container", "codec", "picture", "expected"),
    [
        ("mp4", "aac", None, media.M4A),  # brand isom: the bytes alone say MP4
        ("3gp", "aac", None, media.M4A),  # a phone's recording
        ("mp4", "aac", "cover", media.M4A),  # cover art is a picture stream, not video
        ("webm", "libopus", None, media.WEBM_AUDIO),  # a browser's voice note
        ("matroska", "aac", None, media.MKA),
    ],
)
def test_a_container_holding_audio_alone_is_audio(
    tmp_path: Path, container: str, codec: str, picture: Literal["cover"] | None, expected: media.MediaType
) -> None:
    source = write_wav(tmp_path / "tone.wav", tone())
    voice = encode_audio(source, tmp_path / "voice.bin", container, codec, picture=picture)
    assert media.sniff(voice) == expected and expected.kind == "audio"
    assert media.check_audio(voice) == expected


def test_a_container_with_a_video_stream_stays_video(tmp_path: Path) -> None:
    film = encode_audio(write_wav(tmp_path / "tone.wav", tone()), tmp_path / "film.m4a", "mp4", "aac", picture="video")
    assert media.sniff(film) == media.MP4


def test_mp3_without_id3_is_known_by_its_frame_sync(tmp_path: Path) -> None:
    path = tmp_path / "raw.audio"
    path.write_bytes(b"\xff\xfb\x90\x64" + b"\x00" * 400)  # MPEG-1 layer III, 128 kb/s, 44.1 kHz
    assert media.sniff(path) == media.MP3


def test_aac_adts_is_not_taken_for_mp3() -> None:
    assert media.sniff_bytes(b"\xff\xf1\x50\x80" + b"\x00" * 20) is None


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaNotFoundError) as error:
        media.sniff(tmp_path / "nope.png")
    assert "nope.png" in one_line(error)


def test_a_name_that_is_not_utf8_is_shown_with_its_byte_and_one_with_a_newline_quoted(tmp_path: Path) -> None:
    """A name from an old disk shows the byte it holds (as the image index reports it), not the
    stand-in Python reads it as ('caf\\udce9.png'); a newline is quoted, the message one line."""
    odd = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.png")
    with pytest.raises(MediaNotFoundError) as error:
        media.sniff(odd)
    assert one_line(error) == f"no such file: {tmp_path}/caf\\xe9.png"
    newline = tmp_path / "a\nb.png"
    with pytest.raises(MediaNotFoundError) as error:
        media.sniff(newline)
    assert one_line(error) == f"no such file: {str(newline)!r}"


def test_broken_symlink(tmp_path: Path) -> None:
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "never-there.jpg")
    with pytest.raises(MediaNotFoundError) as error:
        media.open_image(link)
    assert "broken symlink" in one_line(error)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(NotAFileError) as error:
        media.sniff(tmp_path)
    assert "directory" in one_line(error)


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    with pytest.raises(NotAFileError) as error:  # reading would block forever
        media.check_audio(fifo)
    assert "not a regular file" in one_line(error)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(EmptyMediaError) as error:
        media.open_image(empty)
    assert "0 bytes" in one_line(error)


def test_zip_renamed_png_is_unsupported(tmp_path: Path) -> None:
    fake = tmp_path / "holiday.png"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("a.txt", "not an image")
    with pytest.raises(UnsupportedMediaError) as error:
        media.open_image(fake)
    assert "not a supported" in one_line(error)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_image_is_corrupt(tmp_path: Path, suffix: str) -> None:
    import random

    from PIL import Image

    noisy = Image.frombytes("RGB", (128, 128), random.Random(1).randbytes(128 * 128 * 3))
    whole = tmp_path / f"whole.{suffix}"
    noisy.save(whole)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert media.sniff(cut).kind == "image"  # the header is intact: only decoding finds it out
    with pytest.raises(CorruptMediaError) as error:
        media.open_image(cut)
    assert "truncated or damaged" in one_line(error)


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30000, 30000))
    with pytest.raises(ImageTooLargeError) as error:
        media.open_image(bomb)
    assert "too large to decode safely" in one_line(error)


def test_pillow_bomb_guard_is_mapped_too(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30000, 30000))
    with pytest.raises(ImageTooLargeError) as error:  # our limit raised: Pillow's own guard still holds
        media.open_image(bomb, max_pixels=10**12)
    assert "too large to decode safely" in one_line(error)


def test_own_pixel_limit(tmp_path: Path) -> None:
    image = make_image(tmp_path / "small.png", size=(100, 100))
    with pytest.raises(ImageTooLargeError) as error:
        media.open_image(image, max_pixels=9_999)
    assert "100x100 pixels, over 9,999" in one_line(error)
    assert media.open_image(image, max_pixels=10_000).size == (100, 100)


def _corrupt_wav(tmp_path: Path, name: str, edit: tuple[int, bytes]) -> Path:
    path = write_wav(tmp_path / name)
    data = bytearray(path.read_bytes())
    offset, value = edit
    data[offset : offset + len(value)] = value
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        ((22, struct.pack("<H", 0)), "0 channels"),  # fmt: channels
        ((24, struct.pack("<I", 7)), "sample rate"),  # fmt: sample rate
        ((12, b"junk"), "before its format chunk"),  # the fmt chunk renamed away
        ((16, struct.pack("<I", 8)), "format chunk of"),  # fmt chunk declared too short
        ((20, struct.pack("<H", 0)), "sample format 0 (unknown)"),  # fmt: format tag
        ((20, struct.pack("<H", 0xABCD)), "unknown sample format 0xabcd"),  # no decoder in FFmpeg
    ],
)
def test_corrupt_wav_header(tmp_path: Path, edit: tuple[int, bytes], why: str) -> None:
    path = _corrupt_wav(tmp_path, "voice.wav", edit)
    with pytest.raises(CorruptMediaError) as error:
        media.check_audio(path)
    assert why in one_line(error)


def test_a_wav_sample_format_ffmpeg_decodes_is_accepted(tmp_path: Path) -> None:
    """G.726 (tag 0x0045), like GSM 6.10 (0x0031), is a format of telephone recordings that
    FFmpeg decodes; refusing every tag outside a short list called them corrupt."""
    g726 = encode_audio(write_wav(tmp_path / "tone.wav", tone()), tmp_path / "call.wav", "wav", "g726")
    assert g726.read_bytes()[20:22] == struct.pack("<H", 0x0045)
    assert media.check_audio(g726) == media.WAV


@pytest.mark.parametrize("suffix", ["tif", "avif"])
def test_tiff_and_avif_pictures_are_read(tmp_path: Path, suffix: str) -> None:
    picture = make_image(tmp_path / f"scan.{suffix}", size=(40, 30))
    assert media.sniff(picture).name == {"tif": "tiff"}.get(suffix, suffix)
    assert media.open_image(picture).size == (40, 30)


def test_big_endian_tiff_is_known_too() -> None:
    assert media.sniff_bytes(b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 20) == media.TIFF


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (len(body) + 8).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


def test_an_avif_picture_is_not_taken_for_an_mp4_video() -> None:
    assert media.sniff_bytes(_ftyp(b"avif", b"avif", b"mif1", b"miaf")) == media.AVIF
    assert media.sniff_bytes(_ftyp(b"mif1", b"mif1", b"avif")) == media.AVIF  # AVIF under the generic brand
    assert media.sniff_bytes(_ftyp(b"isom", b"isom", b"mp41")) == media.MP4


@pytest.mark.parametrize("brands", [(b"heic", b"mif1", b"heic"), (b"mif1", b"mif1", b"heix"), (b"msf1", b"msf1")])
def test_a_heic_picture_is_refused_in_one_line_that_says_what_to_do(tmp_path: Path, brands: tuple[bytes, ...]) -> None:
    photo = tmp_path / "IMG_0001.HEIC"
    photo.write_bytes(_ftyp(*brands) + b"\x00" * 64)
    for read in (media.sniff, media.open_image, media.check_audio):
        with pytest.raises(UnsupportedMediaError) as error:
            read(photo)
        assert "HEIC/HEIF pictures are not supported (convert to JPEG or PNG)" in one_line(error)


def test_wrong_kind_is_unsupported(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "sound.png")
    png = make_image(tmp_path / "picture.wav")
    with pytest.raises(UnsupportedMediaError) as error:
        media.open_image(wav)
    assert "not an image" in one_line(error)
    with pytest.raises(UnsupportedMediaError) as error:
        media.check_audio(png)
    assert "not audio" in one_line(error)


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode (see the vanishing-file test)")
    locked = make_image(tmp_path / "locked.png")
    locked.chmod(0)
    with pytest.raises(MediaUnreadableError) as error:
        media.open_image(locked)
    assert "permission denied" in one_line(error)


def test_file_that_vanishes_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_image(tmp_path / "flaky.png")
    real_open = Path.open

    def vanishing_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            path.unlink()
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", vanishing_open)
    with pytest.raises(MediaNotFoundError) as error:
        media.open_image(path)
    assert "disappeared" in one_line(error)


def test_open_image_decodes_to_rgb_and_keeps_no_file_open(tmp_path: Path) -> None:
    for suffix in ("png", "jpg", "gif", "webp", "bmp"):
        image = media.open_image(make_image(tmp_path / f"x.{suffix}", size=(40, 30)))
        assert (image.mode, image.size) == ("RGB", (40, 30))
    assert media.open_image(tmp_path / "x.gif", mode=None).mode == "P"


def test_content_hash_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = make_image(tmp_path / "a.png")
    copy = tmp_path / "renamed.bin"
    copy.write_bytes(path.read_bytes())
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert media.content_hash(path) == media.content_hash(copy) == expected


def test_every_media_error_is_an_agentmm_error_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as error:
        media.sniff(tmp_path / "x.ogg")
    assert error.value.path == tmp_path / "x.ogg"
    assert error.value.exit_code == 2


def test_a_photo_taken_sideways_is_turned_as_its_exif_says(tmp_path: Path) -> None:
    from PIL import Image

    upright = Image.new("RGB", (30, 40), "white")
    upright.paste((255, 0, 0), (0, 0, 30, 10))  # red across the top, as it is shown
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # as the camera stored it: 40x30
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to show
    sideways.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    decoded = media.open_image(tmp_path / "phone.jpg")
    assert decoded.size == (30, 40)
    red, green, blue = decoded.getpixel((15, 2))
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    from PIL import Image

    gradient = Image.new("I;16", (256, 1))
    gradient.putdata([i * 257 for i in range(256)])
    gradient.save(tmp_path / "gradient16.png")
    decoded = media.open_image(tmp_path / "gradient16.png")
    assert [decoded.getpixel((x, 0))[0] for x in (0, 64, 128, 255)] == [0, 64, 128, 255]


def test_transparent_pixels_are_laid_on_white(tmp_path: Path) -> None:
    from PIL import Image

    logo = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    logo.paste((0, 0, 0, 255), (5, 5, 15, 15))  # a black square on nothing
    logo.save(tmp_path / "logo.png")
    decoded = media.open_image(tmp_path / "logo.png")
    assert decoded.getpixel((0, 0)) == (255, 255, 255) and decoded.getpixel((10, 10)) == (0, 0, 0)
    palette = logo.convert("P")  # transparency in a palette image is a tRNS index
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "logo-p.png", transparency=palette.getpixel((0, 0)))
    assert media.open_image(tmp_path / "logo-p.png").getpixel((0, 0)) == (255, 255, 255)


def test_a_big_jpeg_is_decoded_at_a_reduced_scale(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    Image.new("RGB", (4000, 3000), "teal").save(tmp_path / "big.jpg", quality=50)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 7_000_000)  # Pillow warns past it (and fails past twice it)
    assert media.open_image(tmp_path / "big.jpg", min_side=700).size == (1000, 750)
    assert "DecompressionBombWarning" not in capfd.readouterr().err


def _jpeg_declaring(path: Path, width: int, height: int) -> Path:
    """A small JPEG whose frame header (SOF0) is made to declare ``width`` x ``height``."""
    from PIL import Image

    Image.new("RGB", (16, 16), "teal").save(path, quality=50)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def test_one_pixel_limit_for_every_image_kind(tmp_path: Path) -> None:
    """A JPEG was checked at the scale it is decoded at (a 144 Mpx one was taken) while a PNG
    was refused over 89.5 Mpx, and one over 179 Mpx got Pillow's own "decompression bomb DOS
    attack" words. The picture's own size is checked now, against one limit, in one message."""
    for side, too_large in ((12_000, False), (13_500, True)):  # 144 Mpx, 182 Mpx
        png = tmp_path / f"{side}.png"
        png.write_bytes(png_header(side, side))
        pictures = (png, _jpeg_declaring(tmp_path / f"{side}.jpg", side, side))
        for picture in pictures:
            if not too_large:  # decoded (the JPEG's missing data is grey) or found truncated (the PNG's)
                with contextlib.suppress(CorruptMediaError):
                    media.open_image(picture, min_side=256)  # as a captioner opens it: a JPEG at a reduced scale
                continue
            with pytest.raises(ImageTooLargeError) as error:
                media.open_image(picture, min_side=256)
            shown = one_line(error).removeprefix(str(tmp_path) + "/")
            assert shown in (f"{picture.name} is too large to decode safely: {size} pixels, over 178,956,970"
                             for size in (f"{side}x{side}", f"{side * side:,}"))  # fmt: skip


def test_pillow_bomb_guard_says_it_in_our_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # set lower by someone else: Pillow fails past 2M
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(3000, 3000))
    with pytest.raises(ImageTooLargeError) as error:
        media.open_image(bomb)
    assert one_line(error).endswith("bomb.png is too large to decode safely: 9,000,000 pixels, over 2,000,000")


@pytest.mark.parametrize(("container", "codec", "suffix"), [("mp4", "aac", "m4a"), ("webm", "libopus", "webm")])
def test_a_recording_cut_short_is_damaged_not_a_video(tmp_path: Path, container: str, codec: str, suffix: str) -> None:
    whole = encode_audio(write_wav(tmp_path / "tone.wav", tone()), tmp_path / f"voice.{suffix}", container, codec)
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(whole.read_bytes()[:60])
    with pytest.raises(CorruptMediaError) as error:
        media.sniff(cut)
    assert "damaged or truncated" in one_line(error) and "video" not in one_line(error)
