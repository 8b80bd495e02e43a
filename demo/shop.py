"""The demo shop's vocabulary, shared by the synthetic history and the live traffic."""

COUNTRIES = {  # country: (share of customers, cities)
    "US": (0.30, ["New York", "Chicago", "Austin", "Seattle"]),
    "GB": (0.12, ["London", "Manchester", "Leeds"]),
    "DE": (0.10, ["Berlin", "Munich", "Hamburg"]),
    "FR": (0.08, ["Paris", "Lyon", "Marseille"]),
    "CA": (0.06, ["Toronto", "Vancouver"]),
    "NL": (0.05, ["Amsterdam", "Rotterdam"]),
    "ES": (0.05, ["Madrid", "Barcelona"]),
    "IT": (0.05, ["Milan", "Rome"]),
    "AU": (0.05, ["Sydney", "Melbourne"]),
    "SE": (0.04, ["Stockholm", "Gothenburg"]),
    "AT": (0.04, ["Vienna", "Graz"]),
    "CH": (0.03, ["Zurich", "Geneva"]),
    "PL": (0.03, ["Warsaw", "Krakow"]),
}
CATEGORIES = ["electronics", "apparel", "home", "beauty", "sports", "books", "toys", "grocery"]
CHANNELS = ["organic", "paid_search", "social", "email", "referral"]
DEVICES = ["mobile", "desktop", "tablet"]
PATHS = ["/", "/sale", "/new", "/help", "/account"]
