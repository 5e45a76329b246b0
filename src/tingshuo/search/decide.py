"""The search decision (JSON-schema constrained) and the note that hands results to the reply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from tingshuo.llm.base import ChatModel, Message
from tingshuo.search.providers import SearchResult

SCHEMA = {
    "type": "object",
    "oneOf": [
        {"properties": {"action": {"const": "reply"}}, "required": ["action"]},
        {"properties": {"action": {"const": "web_search"}, "query": {"type": "string", "maxLength": 40}},
         "required": ["action", "query"]},
    ],
}

# Asked in Chinese whatever the user's language: with an English version the 1.5B missed "Will it snow in Chicago
# tomorrow?" (P 0.42) and "latest news about the Mars mission" (0.52); with this one it routed 29 of 29.
_QUESTION = ("今天是{today}。回答这句话要不要上网查实时信息？只有天气、新闻、比赛结果、股价汇率、营业时间这类每天在变的才要查；"
             "知识、历史、常识、聊天、讲故事都不查。例：今天天气→web_search；长城多长→reply；讲个笑话→reply；昨天谁赢了→web_search。")


# A pre-filter behind the turn plan that can only hold a search back (tingshuo.intent.gate.settle): the plan (and
# the decision after it) read knowledge questions as needing the web — "珠穆朗玛峰有多高": plan P(search) 0.99,
# decision P(web) 0.97 on the dev split; "长城有多长", "What is the capital of France?" were searched in
# tests/test_search.py — so a turn is looked up only when the model says so *and* its words can be about the present.
FRESH_CUE = re.compile(
    r"今天|今晚|今年|明天|后天|昨天|昨晚|前天|现在|目前|最近|最新|刚刚|刚才|本周|这周|下周|上周|这个月|实时|新闻|天气|气温|下雨|下雪|"
    r"比分|比赛|股价|汇率|油价|金价|房价|价格|多少钱|开门|营业|航班|票房|排名|选举|现任|"
    r"\b(today|tonight|tomorrow|yesterday|now|currently|current|latest|recent|recently|this (week|month|year)|news|"
    r"weather|forecast|score|scores|won|win|game|match|stock|price|prices|exchange rate|open|flight|election)\b",
    re.I)


@dataclass
class SearchDecision:
    search: bool
    query: str = ""
    p: float | None = None  # P(search) where the backend exposes it


def decide(llm: ChatModel, history: list[Message], user_text: str, today: date | None = None,
           threshold: float = 0.7) -> SearchDecision:
    """Asked after the user's turn (the conversation prefix stays cached).

    Backends that score prompts (``caps.prompt_scores``): the decision is the answer's first token over "web" /
    "reply", read as a probability (one forward pass, ~0.3 s) instead of sampled — sampling the whole object
    under the grammar took 1.6 s a turn and leaned to "reply" on every tie; only when it says search is the object
    (with the query) generated under the schema. Chat APIs: the schema-constrained object in one request.
    """
    q = _QUESTION.format(today=(today or date.today()).isoformat())
    msgs: list[Message] = [*history, {"role": "user", "content": user_text.strip()}, {"role": "system", "content": q}]
    scores = llm.label_probabilities(msgs, ["web", "reply"]) if llm.caps.prompt_scores else None
    if scores is not None:
        p = scores["web"]
        if p < threshold:
            return SearchDecision(False, p=p)
        schema = {"type": "object", "properties": {"action": {"const": "web_search"},
                                                   "query": {"type": "string", "maxLength": 40}},
                  "required": ["action", "query"]}
        out = llm.complete_json(msgs, schema, max_tokens=40)
        return SearchDecision(True, str(out.get("query") or user_text).strip() or user_text.strip(), p)
    out = llm.complete_json(msgs, SCHEMA, max_tokens=40)
    if out.get("action") == "web_search":
        return SearchDecision(True, str(out.get("query") or user_text).strip() or user_text.strip())
    return SearchDecision(False)


_NOTE = {
    "zh": ("刚才用「{query}」查到了下面的资料（{today}）：\n{results}\n"
           "你的回答已经以“据{first}，”开头，接着用一两句话直接说出资料里回答用户问题的具体事实。资料里没有的内容不要编。"),
    "en": ("A search for \"{query}\" found ({today}):\n{results}\n"
           "Your answer already begins with \"According to {first}, \"; go on with the specific facts from these "
           "results that answer the question, in one or two sentences. Do not add anything they do not say."),
}
_LEAD = {"zh": "据{source}，", "en": "According to {source}, "}


def source_lead(results: list[SearchResult], lang: str) -> str:
    """The reply's first words when there are results: the source, named by us so it is never left out."""
    return _LEAD["zh" if lang == "zh" else "en"].format(source=results[0].source) if results else ""


_NOTHING = {
    "zh": ("刚才用「{query}」查询，{why}。你现在无法知道这个问题的最新情况："
           "告诉用户你没查到，不要给出任何具体的数字、结果、天气或新闻，可以建议对方去哪里查。"),
    "en": ("A search for \"{query}\" {why}. You cannot know the current answer: tell the user you could not look it up, "
           "give no specific numbers, results, weather or news, and suggest where they could check."),
}
_WHY = {"zh": {"empty": "没有找到相关结果", "error": "搜索服务暂时用不了", "off": "搜索功能没有开启"},
        "en": {"empty": "found nothing relevant", "error": "could not reach the search service", "off": "is not available (search is off)"}}


def results_note(query: str, results: list[SearchResult], lang: str, failure: str | None = None) -> str:
    lang = "zh" if lang == "zh" else "en"
    if not results:
        return _NOTHING[lang].format(query=query, why=_WHY[lang][failure or "empty"])
    lines = "\n".join(f"{i}. [{r.source}{'，' + r.published if r.published else ''}] {r.title}：{r.snippet}"
                      for i, r in enumerate(results, 1))
    return _NOTE[lang].format(query=query, results=lines, first=results[0].source, today=date.today().isoformat())
