from curation.words import quantity


def test_a_count_says_its_noun_in_the_number_it_takes() -> None:
    assert [quantity(n, "review") for n in (0, 1, 2)] == ["0 reviews", "1 review", "2 reviews"]
    assert quantity(3, "copy", "copies") == "3 copies"
