"""Live information: when a question needs fresh facts, look them up and answer with the source named.

``decide`` asks the chat model for a JSON decision constrained by a schema ({"action": "reply"} or
{"action": "web_search", "query": …}): shared/research/llm.md measured this reliable on the 1.5B where its
native tool calls went unparsed and the persona prompt made it invent the weather. Providers sit behind one
small protocol: a local full-text index of the user's documents and feeds (default, offline), SearXNG, Tavily
and Brave (by configuration).
"""

from tingshuo.search.providers import (LocalIndex, SearchError, SearchProvider, SearchResult, load_provider)
from tingshuo.search.decide import FRESH_CUE, SearchDecision, decide, results_note, source_lead

__all__ = ["LocalIndex", "SearchDecision", "SearchError", "SearchProvider", "SearchResult", "decide",
           "load_provider", "results_note", "source_lead", "FRESH_CUE"]
