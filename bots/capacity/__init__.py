"""How many players one server process holds on this machine (``tickline capacity``).

``search`` decides which player counts to try and what the verdicts add up to
(pure); ``probe`` runs one try against a real ``tickline serve`` with real bots;
``run`` drives the search within a time budget and makes the command's answer.
"""
