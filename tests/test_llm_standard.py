"""langchain-tests' standard unit suite for ChatLlamaCpp (no model is loaded by these)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from agentmm.llm import ChatLlamaCpp
from agentmm.models import SHIPPED_MODELS


class TestChatLlamaCppStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict:
        return {"model_path": str(SHIPPED_MODELS["smollm2"].path()), "temperature": 0}
