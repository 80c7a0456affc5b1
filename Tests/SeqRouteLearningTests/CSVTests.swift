import Foundation
import Testing
@testable import SeqRouteLearning

@Suite struct CSVTests {
    @Test func plainRecordsAndEmptyFields() throws {
        let rows = try CSV.parse("a,b,c\n1,,3\n,,\n")
        #expect(rows.map(\.fields) == [["a", "b", "c"], ["1", "", "3"], ["", "", ""]])
        #expect(rows.map(\.line) == [1, 2, 3])
    }

    @Test func quotedCommasQuotesAndNewlines() throws {
        let text = "id,text\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\nlines\r\nhere\"\n4,\"\"\n"
        let rows = try CSV.parse(text)
        #expect(rows.map(\.fields) == [["id", "text"], ["1", "a, b"], ["2", "say \"hi\""],
                                        ["3", "two\nlines\r\nhere"], ["4", ""]])
        // A record that spans lines is numbered by its first line, and the next one counts on.
        #expect(rows.map(\.line) == [1, 2, 3, 4, 7])
    }

    @Test func lineEndingsBlankLinesAndByteOrderMark() throws {
        let rows = try CSV.parse(Data([0xEF, 0xBB, 0xBF]) + Data("x,y\r\n\r\n1,2\n\nlast,\"q\"".utf8))
        #expect(rows.map(\.fields) == [["x", "y"], ["1", "2"], ["last", "q"]])
        #expect(rows.map(\.line) == [1, 3, 5])
    }

    @Test func trailingCommaAddsAnEmptyField() throws {
        #expect(try CSV.parse("a,\nb,c,").map(\.fields) == [["a", ""], ["b", "c", ""]])
    }

    @Test func quoteInsideAnUnquotedFieldIsKept() throws {
        #expect(try CSV.parse("5\" disk,x\n").map(\.fields) == [["5\" disk", "x"]])
    }

    @Test func unclosedQuoteNamesTheRecordLine() {
        #expect(throws: CSVError(line: 2, message: "quoted field is not closed")) {
            try CSV.parse("a,b\n1,\"open\nstill open\n")
        }
    }

    @Test func textAfterClosingQuoteIsRefused() {
        #expect(throws: CSVError(line: 1, message: "unexpected character after a closing quote")) {
            try CSV.parse("\"a\"b,c\n")
        }
    }

    @Test func pythonListPrompts() {
        #expect(pythonStringList("['Answer:\\nB']") == ["Answer:\nB"])
        #expect(pythonStringList("[\"Dennis's menudo\"]") == ["Dennis's menudo"])
        #expect(pythonStringList("['it\\'s', \"a \\\"b\\\"\", 'c\\\\d\\x02\\u00e9']") == ["it's", "a \"b\"", "c\\d\u{02}é"])
        #expect(pythonStringList("[]") == [])
        #expect(pythonStringList("['unknown \\q escape']") == ["unknown \\q escape"])
        #expect(pythonStringList("plain prompt") == nil)
        #expect(pythonStringList("['unterminated]") == nil)
        #expect(pythonStringList("['a'] trailing") == nil)
    }
}
