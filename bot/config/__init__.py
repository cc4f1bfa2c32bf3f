"""Typed configuration: `config.yaml` validated into dataclasses (sections), then environment overrides
(loading), checked together (checks)."""

from bot.config.loading import config_path, load_config
from bot.config.sections import (
    GROUNDING_RULES,
    Config,
    ContentConfig,
    ConversationConfig,
    GapsConfig,
    GroundingConfig,
    LogConfig,
    ModelConfig,
    TelegramConfig,
    WecomBotConfig,
    WecomConfig,
)

__all__ = ["GROUNDING_RULES", "Config", "ContentConfig", "ConversationConfig", "GapsConfig", "GroundingConfig",
           "LogConfig", "ModelConfig", "TelegramConfig", "WecomBotConfig", "WecomConfig", "config_path", "load_config"]
