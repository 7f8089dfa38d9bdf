#!/usr/bin/env python3
"""Writes a deterministic customers CSV for the import benchmark.

Usage: gen_customers.py N OUT.csv
Columns: the known fields plus typed attributes (numbers, booleans, text, a
nested address.city), about 150 bytes a row.
"""
import random
import sys

n = int(sys.argv[1])
out = sys.argv[2]
rng = random.Random(42)
countries = [("DE", "Europe/Berlin"), ("US", "America/New_York"), ("FR", "Europe/Paris"),
             ("GB", "Europe/London"), ("AT", "Europe/Vienna"), ("JP", "Asia/Tokyo")]
plans = ["free", "basic", "pro", "enterprise"]
with open(out, "w", encoding="utf-8") as f:
    f.write("email,external_id,first_name,last_name,timezone,country,plan,lifetime_value,orders,vip,address.city\n")
    for i in range(n):
        country, tz = countries[rng.randrange(len(countries))]
        ltv = rng.randrange(0, 500000) / 100
        f.write(f"user{i}@import.example,crm-{i},First{i},Last{i % 9973},{tz},{country},"
                f"{plans[rng.randrange(4)]},{ltv:.2f},{rng.randrange(0, 40)},"
                f"{'true' if ltv > 3000 else 'false'},City {i % 500}\n")
