"""Writes the small credit-risk example datasets (stdlib only, seeded).

reference.csv: 2000 applications the model was trained on.
current.csv:   1500 recent applications in which income fell, a new country
               appeared and bureau scores went missing more often; age and
               loan amount are unchanged.
"""

import csv
import random


def rows(n, seed, drift):
    rng = random.Random(seed)
    countries = ["DE", "FR", "IT", "NL"] + (["ES"] if drift else [])
    for _ in range(n):
        age = max(18, int(rng.gauss(41, 11)))
        income = round(rng.lognormvariate(10.6 - (0.25 if drift else 0.0), 0.45), 2)
        loan = round(rng.gammavariate(2.0, 4000.0), 2)
        bureau = "" if rng.random() < (0.12 if drift else 0.03) else round(rng.gauss(620, 70), 1)
        country = rng.choice(countries)
        has_card = rng.random() < 0.62
        employment = rng.choice(["salaried", "self-employed", "retired", "student"])
        dependents = min(int(rng.expovariate(0.8)), 6)
        yield [age, income, loan, bureau, country, "true" if has_card else "false", employment, dependents]


HEADER = ["age", "income", "loan_amount", "bureau_score", "country", "has_card", "employment", "dependents"]

for name, n, seed, drift in [("reference.csv", 2000, 7, False), ("current.csv", 1500, 8, True)]:
    with open(name, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows(n, seed, drift))
