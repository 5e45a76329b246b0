"""English pronunciation coaching: what a learner said, word by word and sound by sound."""

from tingshuo.coach.pronunciation import PronunciationCoach, Report, WordScore

__all__ = ["PronunciationCoach", "Report", "WordScore"]
