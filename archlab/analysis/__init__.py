"""The read side: a campaign opened for reading, its leaderboard, report, plots,
statistics, and the analyst chat over them. Nothing here writes to a campaign."""
