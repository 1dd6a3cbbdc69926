"""ChatLlamaCpp and images: LangChain image blocks in llama-cpp-python's form, typed errors for
what a model cannot take, and the image projector's checks. Nothing here runs a VLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agentmm.errors import CorruptModelError, ModelNotFoundError, UnsupportedContentError
from agentmm.llm import ChatLlamaCpp, _vision_handler_class, llama_messages, without_images
from agentmm.settings import load_settings

PNG = "iVBORw0KGgo="
DATA_URI = f"data:image/png;base64,{PNG}"


def test_both_image_block_styles_become_llama_cpp_image_url_parts() -> None:
    message = HumanMessage(
        content=[
            {"type": "image", "base64": PNG, "mime_type": "image/png"},  # LangChain v1 standard
            {"type": "image_url", "image_url": {"url": DATA_URI}},  # OpenAI style
            {"type": "image_url", "image_url": DATA_URI},  # OpenAI style, bare string
            {"type": "image", "url": "https://example.com/cat.jpg"},
            {"type": "text", "text": "What are these?"},
        ]
    )
    rendered, images = llama_messages([SystemMessage("Be brief."), message])
    assert images == 4
    assert rendered[0] == {"role": "system", "content": "Be brief."}
    parts = rendered[1]["content"]
    assert parts[:3] == [{"type": "image_url", "image_url": {"url": DATA_URI}}] * 3
    assert parts[3] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    assert parts[4] == {"type": "text", "text": "What are these?"}
    assert without_images(rendered)[1] == {"role": "user", "content": "What are these?"}


def test_text_only_messages_stay_strings() -> None:
    rendered, images = llama_messages(
        [HumanMessage(content=[{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there."}]),
         AIMessage("Hi.")]
    )  # fmt: skip
    assert images == 0
    assert isinstance(rendered[0]["content"], str) and "there." in rendered[0]["content"]  # langchain joins them
    assert rendered[1] == {"role": "assistant", "content": "Hi."}


@pytest.mark.parametrize(
    "block",
    [
        {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"},
        {"type": "image", "file_id": "file-123"},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf", "filename": "a.pdf"},
    ],
)
def test_content_the_model_cannot_take_is_a_typed_error(block: dict[str, str]) -> None:
    with pytest.raises(UnsupportedContentError):
        llama_messages([HumanMessage(content=[block, {"type": "text", "text": "hi"}])])


def test_a_text_only_model_refuses_images_before_loading_anything(tmp_path: Path) -> None:
    model = ChatLlamaCpp(model_path=str(tmp_path / "never-loaded.gguf"))
    assert model.accepts_images is False
    picture = HumanMessage(content=[{"type": "image", "base64": PNG, "mime_type": "image/png"}, "What is it?"])
    with pytest.raises(UnsupportedContentError, match="cannot see images: set mmproj") as caught:
        model.invoke([picture])
    assert "\n" not in str(caught.value)
    assert ChatLlamaCpp(model_path="m.gguf", mmproj_path="p.gguf").accepts_images is True


def test_the_mmproj_setting_is_resolved_with_one_line_errors(tmp_path: Path, shipped_model: Path) -> None:
    settings = load_settings(mmproj=str(tmp_path / "missing-mmproj.gguf"))
    with pytest.raises(ModelNotFoundError, match="mmproj not found"):
        ChatLlamaCpp.from_settings(settings)
    projector = tmp_path / "mmproj.gguf"
    projector.write_bytes(b"GGUF")
    model = ChatLlamaCpp.from_settings(load_settings(mmproj=str(projector)))
    assert model.accepts_images and model.mmproj_path == str(projector.resolve())
    assert ChatLlamaCpp.from_settings(load_settings()).accepts_images is False


def test_the_handler_gives_text_templates_one_string() -> None:
    """SmolLM2's template prints a list of parts as a Python list: the handler joins them."""
    handler = _vision_handler_class()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": DATA_URI}},
                                           {"type": "text", "text": "What is it?"}]}  # fmt: skip
    converted = handler._convert_message_for_template(message, "<__media__>")
    assert converted["content"] == "<__media__>\nWhat is it?"
    assert handler.get_image_urls([message]) == [DATA_URI]  # the handler still finds the picture


@pytest.mark.e2e
def test_a_chat_model_as_its_own_projector_is_refused_in_one_line(shipped_model: Path) -> None:
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=512, mmproj_path=str(shipped_model))
    with pytest.raises(CorruptModelError, match="is not an image projector") as caught:
        model.load()
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def seeing_model(shipped_model: Path, tmp_path_factory: pytest.TempPathFactory) -> ChatLlamaCpp:
    """The shipped SmolLM2-135M (576 wide) with a tiny random projector: 4 image tokens."""
    pytest.importorskip("gguf", reason="the test extra's gguf package writes the projector")
    from tests.tiny_mmproj import write_tiny_mmproj

    projector = write_tiny_mmproj(tmp_path_factory.mktemp("mmproj") / "tiny-mmproj.gguf", n_embd_text=576)
    return ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, mmproj_path=str(projector), max_tokens=12,
                        temperature=0.0, seed=1)  # fmt: skip


def picture(tmp_path: Path) -> dict[str, str]:
    from agentmm.graphs.perceive import image_block
    from tests.tools.media_files import make_image

    return image_block(make_image(tmp_path / "red.png"))


@pytest.mark.e2e
def test_an_image_runs_through_llama_cpp_and_the_model_answers(seeing_model: ChatLlamaCpp, tmp_path: Path) -> None:
    question = "What is in the picture?"
    seen = seeing_model.invoke([HumanMessage(content=[picture(tmp_path), {"type": "text", "text": question}])])
    assert seen.text.strip() and seen.usage_metadata and seen.usage_metadata["output_tokens"] > 0
    assert seen.response_metadata["cache"]["reused_tokens"] == 0  # the handler starts from an empty cache
    # The picture became 4 image tokens (a 2x2 patch grid) in front of the words.
    plain = seeing_model.invoke([HumanMessage(question)])
    assert seen.usage_metadata["input_tokens"] - plain.usage_metadata["input_tokens"] >= 4
    # Text turns after it keep llama.cpp's prefix cache.
    again = seeing_model.invoke([HumanMessage(question), plain, HumanMessage("And then?")])
    assert again.response_metadata["cache"]["reused_tokens"] >= plain.usage_metadata["input_tokens"] - 2


@pytest.mark.e2e
def test_a_turn_with_a_picture_through_the_agent(seeing_model: ChatLlamaCpp, tmp_path: Path) -> None:
    from agentmm.graphs.agent import Agent
    from tests.tools.media_files import make_image

    with Agent(load_settings(max_tokens=12, memory=False), model=seeing_model) as agent:
        result = agent.chat("Look!", attachments=[make_image(tmp_path / "red.png")])
    (seen,) = result.trace["observations"]
    assert seen["native"] and seen["model"] == "SmolLM2-135M-Instruct.Q4_1 (native)" and seen["text"] == ""
    assert result.reply.strip() and result.usage.completion_tokens > 0


@pytest.mark.e2e
def test_a_projector_for_another_model_width_is_refused_in_one_line(shipped_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from tests.tiny_mmproj import write_tiny_mmproj

    wrong = write_tiny_mmproj(tmp_path / "wide-mmproj.gguf", n_embd_text=640)
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=512, mmproj_path=str(wrong))
    with pytest.raises(CorruptModelError, match=r"cannot use wide-mmproj\.gguf as the image projector") as caught:
        model.load()
    assert "\n" not in str(caught.value)
