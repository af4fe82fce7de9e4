"""The retraining loop's trainer side: challengers from the archive, compared with the
champion through the backtester, registered, and moved along by the promotion policy.

Training-time code: the scorer, the drift monitor and the review service never import it.
"""
