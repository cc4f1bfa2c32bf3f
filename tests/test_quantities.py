"""bot/text/quantities.py: the values Chinese and English texts state, and English forms computed by code."""

from __future__ import annotations

from bot.text.quantities import (
    chinese_quantities,
    english_form,
    english_values,
    same_value,
)


def test_chinese_quantities_and_their_values() -> None:
    assert chinese_quantities("1.2万人") == {"1.2万": 12000}
    assert chinese_quantities("5000万元和3亿") == {"5000万": 5e7, "3亿": 3e8}
    assert chinese_quantities("2008年2月28日") == {"2008": 2008, "2": 2, "28": 28}
    assert chinese_quantities("百分之三十的企业") == {"百分之三十": 30}
    assert chinese_quantities("一千二百名学生") == {"一千二百": 1200}
    assert chinese_quantities("17,786,419 人") == {"17,786,419": 17786419}
    # Two digits side by side are a range (two or three years), not twenty-three; 千万级 is no number.
    assert chinese_quantities("两三年") == {} and chinese_quantities("千万级大学毕业生") == {}


def test_english_forms_are_computed() -> None:
    assert english_form(12000) == "12,000"
    assert english_form(3e8) == "300 million" and english_form(1.5e9) == "1.5 billion"
    assert english_form(17786419) == "17,786,419" and english_form(1.5) == "1.5"


def test_english_values() -> None:
    assert english_values("On February 28, 2008, 12,000 people") == {2, 28, 2008, 12000}
    assert english_values("300 million users in two months") == {3e8, 2}
    assert english_values("It may rain") == set()  # 'may' in lower case is no month
    assert same_value(12000.0, {12000.0000001}) and not same_value(1200, {12000})
